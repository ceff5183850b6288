"""The Kubernetes job backend against a local Kubernetes API (kmock) over real HTTP, official client.

The test plays the Job controller: it starts the job's pod with a log, then marks the Job Complete or
Failed (backoff limit, deadline) while the backend watches. Last, the whole train worker runs a request
on that API: the Job appears, the test does what the trainer image would (writes the model to S3) and
completes the Job, and ModelLogged comes back.
"""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from producers.client import ModelBus
from schemas.envelope import CloudEvent, new_event
from schemas.events import TrainRequested
from schemas.settings import BrokerSettings, KubernetesSettings, Settings, StorageSettings, TrainSettings
from tests.conftest import running_worker
from tests.models import build_tiny_classifier
from tests.train.conftest import S3
from tests.train.kube_jobs import CONFIG_MAPS, JOBS, JobKube, running_job_kube
from training.protocol import Progress
from training.spec import RESULT_FILE, JobSpec
from workers.app import create_app
from workers.backends.jobs import TrainJob
from workers.backends.k8s_jobs import KubernetesJobs
from workers.errors import PermanentError, RetryableError
from workers.manifests.job import build_job, run_id
from workers.models_registry import ModelRegistry
from workers.profiles import load_profiles
from workers.train import tasks as train_tasks

OUTPUT = "s3://models/default/model/sentiment/7c1d/"
PROGRESS = "".join(json.dumps({"progress": {"epoch": s / 4, "step": s, "max_steps": 8, "loss": 1 / s}}) + "\n"
                   for s in range(1, 5))


def cluster_settings(**overrides: Any) -> Settings:
    return Settings(backend="kserve", kubernetes=KubernetesSettings(namespace="default", api_timeout_s=5.0),
                    storage=StorageSettings(root="s3://models"), **overrides)


def train_job(name: str = "sentiment", timeout_s: float = 600.0, output_uri: str = OUTPUT) -> TrainJob:
    event: CloudEvent[TrainRequested] = new_event(TrainRequested(
        name=name, base_model="huggingface://sentence-transformers/all-MiniLM-L6-v2",
        dataset={"uri": "s3://data/reviews.csv"}, profile="1xa100"))
    spec = JobSpec(request=event.data, run_id=run_id(event), version="7c1d", base_model=str(event.data.base_model),
                   output_uri=output_uri)
    return TrainJob(event=event, spec=spec, profile=load_profiles().get_or_fail("1xa100"), timeout_s=timeout_s)


@pytest.fixture
def kube() -> Iterator[JobKube]:
    with running_job_kube() as api:
        yield api


@pytest.fixture
def backend(kube: JobKube) -> Iterator[KubernetesJobs]:
    jobs = KubernetesJobs(cluster_settings(), api_client=kube.new_api_client())
    yield jobs
    jobs.close()


def follow_in_background(backend: KubernetesJobs, name: str, window_s: float = 20.0):  # type: ignore[no-untyped-def]
    progress: list[Progress] = []
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(backend.follow, name, window_s, progress.append)
    pool.shutdown(wait=False)
    return future, progress


def test_submit_creates_the_spec_config_map_and_the_job_and_a_redelivery_adopts_them(
    kube: JobKube, backend: KubernetesJobs
) -> None:
    job = train_job(timeout_s=1800)

    first = backend.submit(job)
    again = backend.submit(job)

    assert (first.created, again.created, again.changed) == (True, False, False)
    created = kube.job(job.run_id)
    assert created is not None
    expected = build_job(job.event, job.profile, cluster_settings(), output_uri=OUTPUT, base_model=job.spec.base_model)
    expected["spec"]["activeDeadlineSeconds"] = 1800
    assert created["spec"] == expected["spec"]
    assert created["metadata"]["labels"] == expected["metadata"]["labels"]
    config_map = kube.config_map(job.run_id)
    assert config_map is not None
    carried = JobSpec.model_validate_json(config_map["data"]["spec.json"])
    assert carried.output_uri == OUTPUT
    assert carried.work_dir == "/scratch/work"
    assert kube.requests(kmock.action.CREATE, JOBS) == 2  # the second create met a 409 and adopted
    assert kube.names(JOBS) == [job.run_id]


def test_a_job_that_completes_is_seen_through_the_watch_with_progress_on_the_way(
    kube: JobKube, backend: KubernetesJobs
) -> None:
    job = train_job()
    backend.submit(job)
    kube.start_pod(job.run_id, "loading the model\n" + PROGRESS)

    # the job is running: a short window relays its progress, once
    seen: list[Progress] = []
    assert backend.follow(job.run_id, 0.3, seen.append).state == "pending"
    assert [p.step for p in seen] == [1, 2, 3, 4]
    assert backend.follow(job.run_id, 0.3, seen.append).state == "pending"
    assert len(seen) == 4

    # then the controller marks it Complete while the backend watches
    future, _ = follow_in_background(backend, job.run_id)
    kube.wait_for_watch(count=3)
    kube.complete(job.run_id)

    assert future.result(timeout=10).state == "ready"


def test_a_failed_job_reports_the_trainers_reason_and_the_pod_log_tail(
    kube: JobKube, backend: KubernetesJobs
) -> None:
    job = train_job()
    backend.submit(job)
    error = {"error": {"reason": "UnknownColumn", "message": "dataset has no column 'review'; its columns are: text"}}
    kube.start_pod(job.run_id, f"loading dataset\n{json.dumps(error)}\n")

    future, _ = follow_in_background(backend, job.run_id)
    kube.wait_for_watch()
    kube.fail(job.run_id)
    observation = future.result(timeout=10)

    assert observation.state == "failed"
    assert observation.reason == "UnknownColumn"
    assert observation.message == "dataset has no column 'review'; its columns are: text"
    assert "loading dataset" in observation.details["log_tail"]


def test_a_job_past_its_deadline_is_a_timeout_with_the_log_tail(kube: JobKube, backend: KubernetesJobs) -> None:
    job = train_job(timeout_s=60)
    backend.submit(job)
    kube.start_pod(job.run_id, PROGRESS)
    assert kube.job(job.run_id)["spec"]["activeDeadlineSeconds"] == 60  # type: ignore[index]

    kube.fail(job.run_id, reason="DeadlineExceeded", message="Job was active longer than specified deadline")
    observation = backend.follow(job.run_id, 5.0, lambda p: None)

    assert observation.state == "failed"
    assert observation.reason == "Timeout"
    assert "DeadlineExceeded" in (observation.message or "")
    assert '"step":4' in observation.details["log_tail"].replace(" ", "")


def test_a_job_that_fails_without_a_pod_log_still_fails_with_kubernetes_reason(
    kube: JobKube, backend: KubernetesJobs
) -> None:
    job = train_job()
    backend.submit(job)
    kube.fail(job.run_id, message="Job has reached the specified backoff limit")

    observation = backend.follow(job.run_id, 5.0, lambda p: None)

    assert observation.reason == "JobFailed"
    assert "backoff limit" in (observation.message or "")
    assert observation.details["log_tail"] == "(no pod log)"


def test_cancel_deletes_the_job_and_its_config_map(kube: JobKube, backend: KubernetesJobs) -> None:
    job = train_job()
    backend.submit(job)

    assert backend.cancel(job.run_id) is True
    assert kube.job(job.run_id) is None
    assert kube.config_map(job.run_id) is None
    assert backend.cancel(job.run_id) is False
    assert backend.follow(job.run_id, 1.0, lambda p: None).state == "missing"


def test_api_errors_become_permanent_or_retryable_outcomes(kube: JobKube, backend: KubernetesJobs) -> None:
    kube.fail_requests(kmock.action.CREATE, 403, times=1, resource=CONFIG_MAPS, message="forbidden by RBAC")
    with pytest.raises(PermanentError) as forbidden:
        backend.submit(train_job("a"))
    assert forbidden.value.reason == "Forbidden"
    assert "forbidden by RBAC" in str(forbidden.value)

    kube.fail_requests(kmock.action.CREATE, 503, times=1, resource=JOBS)
    with pytest.raises(RetryableError):
        backend.submit(train_job("b"))

    with pytest.raises(PermanentError) as local_root:
        backend.submit(train_job("c", output_uri="file:///var/lib/modelbus/artifacts/x/"))
    assert local_root.value.reason == "UnsupportedArtifactRoot"


# ------------------------------------------------------------------------------------- the whole worker


@pytest.fixture
def cluster_worker(kube: JobKube, s3: S3, broker_url: str, tmp_path: Path, topology: list[str]) -> Iterator[Settings]:
    settings = cluster_settings(
        broker=BrokerSettings(url=broker_url, connect_attempts=3, retry_delay_s=0.2), state_dir=tmp_path / "state",
        train=TrainSettings(watch_window_s=2.0, recheck_delay_s=0.5),
    ).model_copy(update={"storage": StorageSettings(root=f"s3://{s3.bucket}/artifacts",
                                                    s3_endpoint_url=s3.endpoint_url)})
    app = create_app(settings, ("train",), register_tasks=False)
    backend = KubernetesJobs(settings, api_client=kube.new_api_client())
    train_tasks.register(app, settings=settings, emitter=app.conf.modelbus_emitter, backend=backend)
    with running_worker(app):
        yield settings
    app.conf.modelbus_emitter.close()
    backend.close()


def test_the_worker_runs_a_request_as_a_job_and_logs_the_model_the_job_stored(
    kube: JobKube, s3: S3, cluster_worker: Settings, tmp_path: Path
) -> None:
    name = f"k8s-{uuid.uuid4().hex[:6]}"
    with ModelBus(cluster_worker) as bus:
        request = bus.train(name, base_model="huggingface://sentence-transformers/all-MiniLM-L6-v2",
                            dataset=f"s3://{s3.bucket}/data/reviews.csv", profile="1xa100", wait=False)
        assert isinstance(request, CloudEvent)

        # the Job appears; the test does what the trainer image would: store the model, then finish
        job_name = run_id(request)
        job = kube.wait_for_job(job_name)
        spec = JobSpec.model_validate_json(kube.config_map(job_name)["data"]["spec.json"])  # type: ignore[index]
        assert spec.output_uri.startswith(f"s3://{s3.bucket}/artifacts/default/model/{name}/")
        assert job["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
        model = build_tiny_classifier(tmp_path / "model")
        (model / RESULT_FILE).write_text(json.dumps({"task": "sequence_classification", "labels": ["neg", "pos"],
                                                     "metrics": {"eval_accuracy": 0.91}}))
        key = spec.output_uri.removeprefix(f"s3://{s3.bucket}/")
        for path in sorted(model.iterdir(), key=lambda p: p.name == RESULT_FILE):
            s3.client().upload_file(str(path), s3.bucket, key + path.name)
        kube.start_pod(job_name, PROGRESS)
        kube.complete(job_name)

        logged = bus.wait(request, timeout=30)

    assert logged.causationid == request.id
    assert logged.data.path == spec.output_uri
    assert logged.data.metrics == {"eval_accuracy": 0.91}
    assert logged.data.labels == ["neg", "pos"]
    assert ModelRegistry.from_settings(cluster_worker).resolve(logged.data.store_uri) == spec.output_uri
