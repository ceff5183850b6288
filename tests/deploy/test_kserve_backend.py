"""The kserve backend end to end: client -> RabbitMQ -> gateway -> Celery -> Kubernetes API -> outcome event.

The Kubernetes API is kmock's emulator on a real port, spoken to by the official client; the test plays
KServe's controller by writing the InferenceService status (Ready, failed to load, or nothing at all).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kmock
import pytest
from prometheus_client import REGISTRY

from producers.client import ModelBus, RequestFailed
from schemas.envelope import encode
from schemas.settings import KubernetesSettings, Settings
from tests.deploy.conftest import deploy_worker, fast_stopping
from tests.deploy.kube import SERVICE_ACCOUNTS, Kube, running_kube
from workers.backends.kserve import KServeBackend
from workers.models_registry import ModelRegistry, ModelVersion
from workers.registry import ServiceRegistry

CLASSIFIER = "huggingface://distilbert/distilbert-base-uncased-finetuned-sst-2-english"
FINETUNED = "s3://datalake/llm/model/test_llm_model/6a1f3e52-8d0b-4c8e-9f65-2b1d4c7e9a01/"


def kserve_settings(settings: Settings, **k8s: Any) -> Settings:
    kubernetes = KubernetesSettings(**{"ready_timeout_s": 30.0, "watch_window_s": 1.0, "recheck_delay_s": 1.0,
                                       "api_timeout_s": 5.0, **k8s})
    return settings.model_copy(update={"backend": "kserve", "task_max_retries": 2, "kubernetes": kubernetes,
                                       "broker": fast_stopping(settings.broker)})


@pytest.fixture
def kube() -> Iterator[Kube]:
    with running_kube() as k:
        yield k


@pytest.fixture
def worker(settings, kube, clean_deploy_queues):  # type: ignore[no-untyped-def]
    """A deploy worker with the kserve backend against the emulator; yields (settings, app)."""
    settings = kserve_settings(settings)
    backend = KServeBackend(settings, api_client=kube.new_api_client())
    with deploy_worker(settings, backend) as app:
        yield settings, app
    backend.close()


def test_a_deploy_is_ready_when_the_controller_reports_ready(worker, kube, bus: ModelBus) -> None:
    settings, _ = worker
    # Given a deploy request for the seed's classifier,
    request = bus.deploy("sentiment", path=CLASSIFIER, model_name="sentiment", task="sequence_classification",
                         profile="cpu-small", wait=False)
    # when the worker has created the InferenceService and the controller marks it Ready,
    created = kube.wait_for("sentiment")
    assert created["metadata"]["labels"]["modelbus.io/event-id"] == request.id
    assert "--model_id=distilbert/distilbert-base-uncased-finetuned-sst-2-english" in \
        created["spec"]["predictor"]["model"]["args"]
    kube.become_ready("sentiment")
    # then ServiceReady arrives with the internal and external URLs and the v2 endpoint.
    ready = bus.wait(request, timeout=30).data
    assert ready.url == "http://sentiment-predictor.default.svc.cluster.local"
    assert ready.external_url == "http://sentiment-default.example.com"
    assert ready.endpoints.v2_infer == "http://sentiment-predictor.default.svc.cluster.local/v2/models/sentiment/infer"
    assert ready.endpoints.openai_chat is None
    record = ServiceRegistry(settings.state_dir).get("sentiment")
    assert record is not None
    assert (record.status, record.backend, record.profile) == ("ready", "kserve", "cpu-small")


def test_a_generator_announces_its_openai_endpoints(worker, kube, bus: ModelBus) -> None:
    request = bus.deploy("llama3", path="huggingface://meta-llama/meta-llama-3-8b-instruct", model_name="llama3",
                         task="text_generation", profile="1xa100",
                         secret_refs=[{"env": "HF_TOKEN", "secret": "hf-token", "key": "token"}], wait=False)
    created = kube.wait_for("llama3")
    env = created["spec"]["predictor"]["model"]["env"]
    assert env == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token",
                                                                        "optional": False}}}]
    kube.become_ready("llama3")
    endpoints = bus.wait(request, timeout=30).data.endpoints
    assert endpoints.openai_completions.endswith("/openai/v1/completions")
    assert endpoints.openai_chat.endswith("/openai/v1/chat/completions")
    assert endpoints.v2_infer is None


def test_a_store_reference_is_served_from_where_the_model_registry_says(worker, kube, bus) -> None:
    settings, _ = worker
    # Given a fine-tuned model logged by the train worker,
    ModelRegistry.from_settings(settings).record(ModelVersion(
        "default", "test-llm-model", "7", base_model="hf://google-bert/bert-base-cased", path=FINETUNED))
    # when it is deployed by reference,
    request = bus.deploy("finetuned", path="store://default/model/test-llm-model:7", profile="1xa100", wait=False)
    created = kube.wait_for("finetuned")
    # then the InferenceService downloads it from the artefact store and remembers the reference.
    assert created["spec"]["predictor"]["model"]["storageUri"] == FINETUNED
    assert created["metadata"]["annotations"]["modelbus.io/model-uri"] == "store://default/model/test-llm-model:7"
    kube.become_ready("finetuned")
    assert bus.wait(request, timeout=30).data.path == "store://default/model/test-llm-model:7"


def test_an_unknown_store_reference_fails_without_touching_the_cluster(worker, kube, bus) -> None:
    with pytest.raises(RequestFailed) as err:
        bus.deploy("ghost", path="store://default/model/never-trained", profile="cpu-small", timeout=30)
    assert err.value.reason == "UnknownModel"
    assert kube.names() == []


def test_a_pending_service_does_not_hold_a_worker_slot(settings, kube, bus: ModelBus, clean_deploy_queues,
                                                       caplog) -> None:
    # Given a worker with a single slot and a first service whose pod takes long to start,
    settings = kserve_settings(settings)
    backend = KServeBackend(settings, api_client=kube.new_api_client())
    with deploy_worker(settings, backend, concurrency=1):
        slow = bus.deploy("slow-gpu", path="hf://org/big", profile="1xa100", wait=False)
        kube.wait_for("slow-gpu")
        # when a second service is requested and becomes ready,
        quick = bus.deploy("quick", path=CLASSIFIER, profile="cpu-small", wait=False)
        kube.wait_for("quick")
        kube.become_ready("quick")
        # then its ServiceReady arrives while the first one is still being followed,
        assert bus.wait(quick, timeout=30).data.service == "quick"
        # and the first one is still followed: it is announced once it becomes ready.
        kube.become_ready("slow-gpu")
        assert bus.wait(slow, timeout=30).data.service == "slow-gpu"
    backend.close()
    # The waiting was done by scheduled follow-up tasks, not by retrying failed ones.
    assert not [r for r in caplog.records if r.name == "workers.runner" and "retrying" in r.getMessage()]


def test_a_model_that_fails_to_load_is_a_deploy_failure_with_the_controllers_reason(worker, kube, bus) -> None:
    request = bus.deploy("broken", path=FINETUNED, profile="1xa100", wait=False)
    kube.wait_for("broken")
    kube.fail_to_load("broken", "CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(RequestFailed) as err:
        bus.wait(request, timeout=30)
    assert err.value.reason == "ModelLoadFailed"
    assert "CUDA out of memory" in err.value.event.data.message
    assert ServiceRegistry(worker[0].state_dir).get("broken").status == "failed"


def test_a_service_that_never_becomes_ready_fails_with_a_readiness_timeout(settings, kube, bus,
                                                                           clean_deploy_queues) -> None:
    settings = kserve_settings(settings, ready_timeout_s=2.5)
    backend = KServeBackend(settings, api_client=kube.new_api_client())
    with deploy_worker(settings, backend):
        request = bus.deploy("stuck", path=CLASSIFIER, profile="cpu-small", wait=False)
        kube.wait_for("stuck")
        kube.set_status("stuck", {"conditions": [
            {"type": "PredictorReady", "status": "False", "reason": "MinimumReplicasUnavailable",
             "message": "0/3 nodes are available: insufficient nvidia.com/gpu"}]})
        with pytest.raises(RequestFailed) as err:
            bus.wait(request, timeout=30)
    backend.close()
    assert err.value.reason == "ReadinessTimeout"
    assert "insufficient nvidia.com/gpu" in err.value.event.data.message


def test_an_unknown_profile_fails_with_the_valid_names_and_creates_nothing(worker, kube, bus) -> None:
    with pytest.raises(RequestFailed) as err:
        bus.deploy("typo", path=CLASSIFIER, profile="1xa10", timeout=30)
    assert err.value.reason == "UnknownProfile"
    assert "1xa100, 1xh100, 1xl4, 2xa100, cpu-large, cpu-small" in err.value.event.data.message
    assert err.value.event.data.details["valid_profiles"][0] == "1xa100"
    assert kube.get("typo") is None


def test_a_redelivered_event_creates_nothing_new(worker, kube, bus) -> None:
    _, app = worker
    request = bus.deploy("once", path=CLASSIFIER, profile="cpu-small", wait=False)
    first_object = kube.wait_for("once")
    kube.become_ready("once")
    first = bus.wait(request, timeout=30)
    updates = kube.requests(kmock.action.UPDATE)
    # When the same event is dispatched again (as after a worker crash, past the gateway's memory),
    app.send_task("modelbus.deploy.requested", args=[encode(request).decode()],
                  queue="modelbus.deploy.tasks", routing_key="modelbus.deploy.tasks",
                  exchange=app.conf.modelbus_task_exchange)
    second = bus.wait(request, timeout=30)
    # then the outcome is the same event again, nothing new exists and nothing was patched.
    assert second.id == first.id
    assert kube.names() == ["once"]
    assert kube.get("once")["metadata"] == first_object["metadata"]
    assert kube.requests(kmock.action.UPDATE) == updates


def test_a_new_request_for_an_existing_service_patches_it_to_the_new_spec(worker, kube, bus) -> None:
    first = bus.deploy("evolving", path=FINETUNED, profile="cpu-small", wait=False)
    kube.wait_for("evolving")
    kube.become_ready("evolving")
    bus.wait(first, timeout=30)
    updates = kube.requests(kmock.action.UPDATE)
    # A 409 on create is answered with a patch: new profile, model from the Hub instead of S3.
    second = bus.deploy("evolving", path="hf://org/better", profile="1xl4", wait=False)
    assert bus.wait(second, timeout=30).data.profile == "1xl4"
    patched = kube.get("evolving")
    model = patched["spec"]["predictor"]["model"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--model_id=org/better" in model["args"]
    assert patched["metadata"]["labels"]["modelbus.io/event-id"] == second.id
    assert kube.requests(kmock.action.UPDATE) == updates + 1


def test_an_inference_service_not_made_by_modelbus_is_left_alone(worker, kube, bus) -> None:
    foreign = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
               "metadata": {"name": "handmade", "namespace": "default"},
               "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}}}
    kube.api.create_namespaced_custom_object("serving.kserve.io", "v1beta1", "default", "inferenceservices", foreign)
    with pytest.raises(RequestFailed) as err:
        bus.deploy("handmade", path=CLASSIFIER, profile="cpu-small", timeout=30)
    assert err.value.reason == "NotManaged"
    assert kube.get("handmade")["spec"]["predictor"]["model"]["modelFormat"]["name"] == "sklearn"


def backend_calls(operation: str, result: str) -> float:
    """modelbus_backend_operations_total of the kserve backend (the worker runs in this process)."""
    labels = {"backend": "kserve", "operation": operation, "result": result}
    return REGISTRY.get_sample_value("modelbus_backend_operations_total", labels) or 0.0


def test_server_errors_from_the_api_are_retried(worker, kube, bus) -> None:
    failed, ok = backend_calls("apply", "KubernetesUnavailable"), backend_calls("apply", "ok")
    kube.fail_requests(kmock.action.CREATE, 500, times=1)
    request = bus.deploy("flaky", path=CLASSIFIER, profile="cpu-small", wait=False)
    kube.wait_for("flaky")
    kube.become_ready("flaky")
    assert bus.wait(request, timeout=30).data.service == "flaky"
    # Operators see the failed call and the retry that worked in the backend metric.
    assert backend_calls("apply", "KubernetesUnavailable") == failed + 1
    assert backend_calls("apply", "ok") == ok + 1


def test_a_forbidden_api_call_is_a_deploy_failure_without_retries(worker, kube, bus) -> None:
    kube.fail_requests(kmock.action.CREATE, 403,
                       message='inferenceservices is forbidden: User "deployer" cannot create')
    with pytest.raises(RequestFailed) as err:
        bus.deploy("denied", path=CLASSIFIER, profile="cpu-small", timeout=30)
    assert err.value.reason == "Forbidden"
    assert "cannot create" in err.value.event.data.message
    assert err.value.event.data.retryable is False
    assert kube.requests(kmock.action.CREATE) == 1
    assert backend_calls("apply", "Forbidden") >= 1


@pytest.mark.parametrize("status", [500, 410])
def test_a_broken_or_expired_watch_is_resumed(worker, kube, bus, status: int) -> None:
    # Given watches that fail (a 500, or 410 Gone for an expired resourceVersion),
    kube.fail_requests(kmock.action.WATCH, status, times=2)
    request = bus.deploy(f"rewatch-{status}", path=CLASSIFIER, profile="cpu-small", wait=False)
    kube.wait_for(f"rewatch-{status}")
    kube.wait_requests(kmock.action.WATCH, 2)  # the worker has met both failures
    kube.become_ready(f"rewatch-{status}")
    # then following resumes and the service is announced.
    assert bus.wait(request, timeout=30).data.service == f"rewatch-{status}"


def test_the_requests_deadline_bounds_the_wait_for_readiness(worker, kube, bus) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=2)
    with pytest.raises(RequestFailed) as err:
        bus.deploy("hurried", path=CLASSIFIER, profile="cpu-small", deadline=deadline, timeout=30)
    assert err.value.reason == "DeadlineExceeded"
    assert ServiceRegistry(worker[0].state_dir).get("hurried").status == "failed"


def test_an_unreachable_api_is_retried_then_reported(settings, bus, clean_deploy_queues) -> None:
    settings = kserve_settings(settings).model_copy(update={"task_max_retries": 1})
    from kubernetes import client

    configuration = client.Configuration(host="http://127.0.0.1:9")  # nothing listens on the discard port
    configuration.retries = 0
    backend = KServeBackend(settings, api_client=client.ApiClient(configuration))
    with deploy_worker(settings, backend), pytest.raises(RequestFailed) as err:
        bus.deploy("nowhere", path=CLASSIFIER, profile="cpu-small", timeout=30)
    backend.close()
    assert err.value.reason == "KubernetesUnreachable"
    assert err.value.event.data.retryable is True


def test_undeploy_deletes_the_service_and_the_account_modelbus_made_for_it(worker, kube, bus) -> None:
    request = bus.deploy("to-delete", path=FINETUNED, profile="cpu-small", wait=False,
                         secret_refs=[{"env": "AWS_ACCESS_KEY_ID", "secret": "s3-creds", "key": "id"}])
    created = kube.wait_for("to-delete")
    assert created["spec"]["predictor"]["serviceAccountName"] == "modelbus-to-delete"
    assert kube.core.read_namespaced_service_account("modelbus-to-delete", "default").secrets[0].name == "s3-creds"
    kube.become_ready("to-delete")
    bus.wait(request, timeout=30)

    deleted = bus.undeploy("to-delete", timeout=30).data
    assert (deleted.service, deleted.backend, deleted.existed) == ("to-delete", "kserve", True)
    assert kube.get("to-delete") is None
    assert kube.requests(kmock.action.DELETE, SERVICE_ACCOUNTS) == 1
    assert ServiceRegistry(worker[0].state_dir).get("to-delete") is None
    # Undeploying again is not an error: there is just nothing left.
    assert bus.undeploy("to-delete", timeout=30).data.existed is False
