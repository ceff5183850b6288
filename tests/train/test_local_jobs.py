"""The local job backend: a training job is a process with its log file; it can be cancelled, it is
stopped at its time limit, and a restarted worker adopts it instead of starting it twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from schemas.envelope import CloudEvent, new_event
from schemas.events import TrainRequested
from schemas.settings import Settings, TrainSettings
from training.protocol import Progress
from training.spec import JobSpec
from workers.backends.jobs import TrainJob
from workers.backends.local_jobs import LocalJobs
from workers.manifests.job import run_id
from workers.profiles import load_profiles

#: A user module that reports progress forever (until stopped).
ENDLESS = '''
import time

def train(context):
    step = 0
    while True:
        step += 1
        context.progress(epoch=step / 100, step=step, max_steps=100, loss=1.0 / step)
        time.sleep(0.1)
'''

QUICK = '''
def train(context):
    from pathlib import Path
    import shutil
    shutil.copytree(context.base_model, context.output_dir, dirs_exist_ok=True)
    context.log_model(metrics={"eval_accuracy": 0.6})
'''


def local_job(tiny_base: Path, tmp_path: Path, source: str, *, timeout_s: float = 600.0) -> TrainJob:
    event: CloudEvent[TrainRequested] = new_event(TrainRequested(
        name="local", base_model=tiny_base.as_uri(), code={"source": source}))
    spec = JobSpec(request=event.data, run_id=run_id(event), version="v1", base_model=tiny_base.as_uri(),
                   output_uri=(tmp_path / "artifacts" / "v1").as_uri() + "/")
    return TrainJob(event=event, spec=spec, profile=load_profiles().get_or_fail("cpu-small"), timeout_s=timeout_s)


@pytest.fixture
def jobs(tmp_path: Path) -> LocalJobs:
    return LocalJobs(Settings(state_dir=tmp_path / "state", train=TrainSettings(log_tail_bytes=2000)))


def backend_calls(operation: str) -> float:
    labels = {"backend": "local-jobs", "operation": operation, "result": "ok"}
    return REGISTRY.get_sample_value("modelbus_backend_operations_total", labels) or 0.0


def follow_until_progress(jobs: LocalJobs, name: str, progress: list[Progress], count: int = 3) -> None:
    end = time.monotonic() + 60
    while len(progress) < count:
        assert jobs.follow(name, 0.5, progress.append).state == "pending"
        assert time.monotonic() < end, "the job reported no progress"


def test_a_running_job_relays_progress_once_and_can_be_cancelled(jobs: LocalJobs, tiny_base: Path,
                                                                  tmp_path: Path) -> None:
    job = local_job(tiny_base, tmp_path, ENDLESS)
    cancels = backend_calls("cancel")
    assert jobs.submit(job).created

    progress: list[Progress] = []
    follow_until_progress(jobs, job.run_id, progress)
    steps = [p.step for p in progress]
    assert steps == list(range(1, len(steps) + 1))  # in order, none twice

    assert jobs.cancel(job.run_id) is True
    assert backend_calls("cancel") == cancels + 1  # operators see it in modelbus_backend_operations_total
    observation = jobs.follow(job.run_id, 5.0, progress.append)

    assert observation.state == "failed"
    assert observation.reason == "Cancelled"
    assert '"progress"' in observation.details["log_tail"]
    assert len(observation.details["log_tail"]) <= 2000
    assert jobs.running() == []
    assert not (jobs.run_dir(job.run_id) / "work").exists()
    assert not (tmp_path / "artifacts").exists()


def test_a_job_past_its_time_limit_is_stopped_as_a_timeout(jobs: LocalJobs, tiny_base: Path, tmp_path: Path) -> None:
    job = local_job(tiny_base, tmp_path, ENDLESS, timeout_s=1.0)
    jobs.submit(job)

    end = time.monotonic() + 60
    while (observation := jobs.follow(job.run_id, 1.0, lambda p: None)).state == "pending":
        assert time.monotonic() < end

    assert observation.reason == "Timeout"
    assert "longer than 1s" in (observation.message or "")
    assert jobs.running() == []


def test_a_restarted_worker_adopts_the_running_job_instead_of_starting_it_again(
    tmp_path: Path, tiny_base: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    job = local_job(tiny_base, tmp_path, QUICK)
    first = LocalJobs(settings)
    first.submit(job)
    pid = first.read(job.run_id).pid  # type: ignore[union-attr]

    # a new backend (a restarted worker) is handed the same request again
    second = LocalJobs(settings)
    again = second.submit(job)
    end = time.monotonic() + 60
    while (observation := second.follow(job.run_id, 1.0, lambda p: None)).state == "pending":
        assert time.monotonic() < end

    assert again.created is False
    assert second.read(job.run_id).pid == pid  # type: ignore[union-attr]
    assert observation.state == "ready"
    assert observation.details["result"]["metrics"] == {"eval_accuracy": 0.6}
    assert (tmp_path / "artifacts" / "v1" / "config.json").is_file()
    first._children.pop(pid).wait(timeout=10)  # reap the child the first backend started
