"""The InferenceService builder, compared with whole expected manifests (golden YAML files).

Each golden file is what the cluster receives for one of the seed's deploy requests. Regenerate them
after an intended change with `MODELBUS_UPDATE_GOLDEN=1 pytest tests/deploy/test_manifests.py` and
review the diff like code.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.envelope import CloudEvent, new_event
from schemas.events import DeployRequested
from schemas.settings import KubernetesSettings, Settings
from schemas.types import ModelURI
from tests.deploy.k8s_schemas import validate
from workers.errors import PermanentError
from workers.manifests.inferenceservice import build_inference_service, build_manifests
from workers.profiles import load_profiles

GOLDEN = Path(__file__).parent / "golden"
FINETUNED = "s3://datalake/llm/model/test_llm_model/6a1f3e52-8d0b-4c8e-9f65-2b1d4c7e9a01/"


def deploy_event(event_id: str, **data: Any) -> CloudEvent[DeployRequested]:
    return new_event(
        DeployRequested(**data),
        source="/tests",
        event_id=event_id,
        correlation_id="corr-" + event_id[:8],
        time=datetime(2026, 9, 1, 12, 0, tzinfo=UTC),
    )


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (DeployRequested data, KubernetesSettings overrides)
    "classifier-distilbert": (
        {
            "service": "sentiment",
            "path": "huggingface://distilbert/distilbert-base-uncased-finetuned-sst-2-english",
            "model_name": "sentiment",
            "task": "sequence_classification",
            "profile": "cpu-small",
            "runtime": {"return_probabilities": True},
        },
        {},
    ),
    "generator-llama3-hf-token": (
        {
            "service": "llama3",
            "path": "huggingface://meta-llama/meta-llama-3-8b-instruct",
            "model_name": "llama3",
            "task": "text_generation",
            "profile": "1xa100",
            "runtime": {"max_model_len": 4096, "dtype": "bfloat16"},
            "envs": [{"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}],
            "secret_refs": [{"env": "HF_TOKEN", "secret": "hf-token", "key": "token"}],
        },
        {},
    ),
    "finetuned-s3": (
        {
            "service": "test-llm-model",
            "path": FINETUNED,
            "model_name": "test_llm_model",
            "task": "sequence_classification",
            "profile": "1xa100",
            "replicas": 2,
        },
        {"service_account": "modelbus-storage", "namespace": "ml"},
    ),
    "finetuned-s3-secrets-serverless": (
        {
            "service": "test-llm-model",
            "path": FINETUNED,
            "model_name": "test_llm_model",
            "profile": "1xa100",
            "secret_refs": [
                {"env": "AWS_ACCESS_KEY_ID", "secret": "datalake-s3", "key": "AWS_ACCESS_KEY_ID"},
                {"env": "AWS_SECRET_ACCESS_KEY", "secret": "datalake-s3", "key": "AWS_SECRET_ACCESS_KEY"},
            ],
            "labels": {"team": "nlp"},
        },
        {"deployment_mode": "Serverless", "ready_timeout_s": 1200},
    ),
}


def build_case(name: str) -> list[dict[str, Any]]:
    data, k8s = CASES[name]
    event = deploy_event(str(uuid.uuid5(uuid.NAMESPACE_URL, f"modelbus-tests/{name}")), **data)
    settings = Settings(kubernetes=KubernetesSettings(**k8s))
    profile = load_profiles().get_or_fail(data["profile"])
    return build_manifests(event, profile, settings)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_built_manifests_equal_the_golden_files(case: str) -> None:
    # Given one of the seed's deploy requests, when the builder runs,
    built = build_case(case)
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("MODELBUS_UPDATE_GOLDEN"):
        golden.write_text(yaml.safe_dump_all(built, sort_keys=False, width=120))
    # then the cluster receives exactly the expected objects.
    assert built == list(yaml.safe_load_all(golden.read_text()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_built_manifest_is_valid_for_the_api_server(case: str) -> None:
    for obj in build_case(case):
        validate(obj)


def test_the_validator_rejects_a_field_the_api_server_would_silently_prune() -> None:
    obj = build_case("classifier-distilbert")[0]
    obj["spec"]["predictor"]["nodeSelectors"] = {"gpu": "a100"}
    with pytest.raises(AssertionError, match="nodeSelectors"):
        validate(obj)


@pytest.mark.parametrize("profile", load_profiles().names)
def test_every_profile_yields_a_valid_manifest_with_gpu_limits_equal_to_requests(profile: str) -> None:
    event = deploy_event("e-" + profile, service="svc", path="hf://org/model", profile=profile)
    obj = build_inference_service(event, load_profiles().get_or_fail(profile), Settings())
    validate(obj)
    resources = obj["spec"]["predictor"]["model"]["resources"]
    gpu_requests = {k: v for k, v in resources["requests"].items() if k.startswith("nvidia.com/")}
    gpu_limits = {k: v for k, v in resources["limits"].items() if k.startswith("nvidia.com/")}
    assert gpu_requests == gpu_limits
    assert bool(gpu_limits) == profile[0].isdigit()  # 1xa100, 2xa100, 1xh100, 1xl4 carry GPUs


def test_a_hub_revision_becomes_model_revision_and_no_storage_uri() -> None:
    event = deploy_event("e-rev", service="svc", path="hf://org/model:abc123", profile="cpu-small")
    model = build_inference_service(event, load_profiles().get_or_fail("cpu-small"), Settings())["spec"]["predictor"][
        "model"]
    assert "--model_id=org/model" in model["args"]
    assert "--model_revision=abc123" in model["args"]
    assert "storageUri" not in model


def test_a_store_reference_is_deployed_from_the_location_the_registry_resolved() -> None:
    event = deploy_event("e-store", service="svc", path="store://proj/model/sst2:3", profile="cpu-small")
    obj = build_inference_service(event, load_profiles().get_or_fail("cpu-small"), Settings(),
                                  model=ModelURI.parse("s3://models/proj/sst2/3/"))
    assert obj["spec"]["predictor"]["model"]["storageUri"] == "s3://models/proj/sst2/3/"
    assert obj["metadata"]["annotations"]["modelbus.io/model-uri"] == "store://proj/model/sst2:3"


def test_a_pvc_path_is_a_storage_uri() -> None:
    event = deploy_event("e-pvc", service="svc", path="pvc://models/sst2", profile="cpu-small")
    obj = build_inference_service(event, load_profiles().get_or_fail("cpu-small"), Settings())
    assert obj["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/sst2"
    validate(obj)


def test_a_file_path_cannot_be_served_by_a_cluster() -> None:
    event = deploy_event("e-file", service="svc", path="file:///models/sst2", profile="cpu-small")
    with pytest.raises(PermanentError) as err:
        build_inference_service(event, load_profiles().get_or_fail("cpu-small"), Settings())
    assert err.value.reason == "UnsupportedModelPath"


def test_a_long_event_id_is_kept_whole_in_the_annotation_and_digested_in_the_label() -> None:
    long_id = "batch:" + "x" * 100
    event = deploy_event(long_id, service="svc", path="hf://org/model", profile="cpu-small")
    obj = build_inference_service(event, load_profiles().get_or_fail("cpu-small"), Settings())
    assert obj["metadata"]["annotations"]["modelbus.io/event-id"] == long_id
    validate(obj)
