"""The training Job builder, compared with whole expected manifests and the Kubernetes schema.

Given the seed's fine-tune (a python job with requirements on profile 1xa100, an HF token by
reference), the cluster receives exactly this Job and ConfigMap.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from schemas.envelope import CloudEvent, new_event
from schemas.events import TrainRequested
from schemas.settings import KubernetesSettings, Settings, StorageSettings
from tests.deploy.k8s_schemas import validate
from training.spec import JobSpec
from workers.manifests.job import build_config_map, build_job, run_id
from workers.profiles import load_profiles

EVENT_ID = "5b0e7d0c-1f7a-4d55-9a3e-2c1d7e9f0a11"
OUTPUT = "s3://datalake/llm/model/test-llm-model/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/"
SEED_CODE = "def train(context):\n    ...\n"


def train_event(**data: Any) -> CloudEvent[TrainRequested]:
    return new_event(TrainRequested(**data), source="/tests", event_id=EVENT_ID, correlation_id="corr-1",
                     time=datetime(2026, 9, 1, 12, 0, tzinfo=UTC))


def seed_event() -> CloudEvent[TrainRequested]:
    return train_event(
        name="test-llm-model", project="llm", base_model="huggingface://google-bert/bert-base-cased",
        dataset={"uri": "hf://yelp_review_full", "max_samples": 1000},
        code={"source": SEED_CODE, "requirements": ["evaluate", "transformers[torch]", "torch", "accelerate"]},
        profile="1xa100", timeout_s=7200,
        envs=[{"name": "WANDB_DISABLED", "value": "true"}],
        secret_refs=[{"env": "HF_TOKEN", "secret": "hf-token", "key": "token"}],
    )


def cluster_settings(**storage: Any) -> Settings:
    return Settings(
        backend="kserve",
        kubernetes=KubernetesSettings(namespace="ml", trainer_image="registry.example/modelbus/trainer:1.2.3",
                                      job_ttl_s=600, job_backoff_limit=0),
        storage=StorageSettings(root="s3://datalake", s3_endpoint_url="http://minio.storage:9000", **storage),
    )


LABELS = {
    "app.kubernetes.io/managed-by": "modelbus",
    "modelbus.io/model": "test-llm-model",
    "modelbus.io/project": "llm",
    "modelbus.io/run-id": "train-test-llm-model-6b0cabd0",
    "modelbus.io/event-id": EVENT_ID,
    "modelbus.io/profile": "1xa100",
}


def test_the_seed_fine_tune_on_1xa100_becomes_this_job() -> None:
    event = seed_event()
    profile = load_profiles().get_or_fail("1xa100")

    job = build_job(event, profile, cluster_settings(s3_credentials_secret="datalake-credentials"),
                    output_uri=OUTPUT, base_model="huggingface://google-bert/bert-base-cased")

    assert run_id(event) == "train-test-llm-model-6b0cabd0"
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "train-test-llm-model-6b0cabd0",
            "namespace": "ml",
            "labels": LABELS,
            "annotations": {
                "modelbus.io/event-id": EVENT_ID,
                "modelbus.io/correlation-id": "corr-1",
                "modelbus.io/base-model": "huggingface://google-bert/bert-base-cased",
                "modelbus.io/output-uri": OUTPUT,
            },
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 7200,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "runtimeClassName": "nvidia",
                    "containers": [{
                        "name": "trainer",
                        "image": "registry.example/modelbus/trainer:1.2.3",
                        "command": ["python", "-m", "training", "/etc/modelbus/spec.json"],
                        "workingDir": "/scratch",
                        "env": [
                            {"name": "PYTHONUNBUFFERED", "value": "1"},
                            {"name": "HF_HOME", "value": "/scratch/huggingface"},
                            {"name": "WANDB_DISABLED", "value": "true"},
                            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
                                "name": "hf-token", "key": "token", "optional": False}}},
                        ],
                        "envFrom": [{"secretRef": {"name": "datalake-credentials"}}],
                        "resources": {
                            "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"},
                            "limits": {"cpu": "12", "memory": "96Gi", "nvidia.com/gpu": "1"},
                        },
                        "volumeMounts": [
                            {"name": "spec", "mountPath": "/etc/modelbus", "readOnly": True},
                            {"name": "scratch", "mountPath": "/scratch"},
                        ],
                    }],
                    "volumes": [
                        {"name": "spec", "configMap": {"name": "train-test-llm-model-6b0cabd0"}},
                        {"name": "scratch", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    validate(job)


def test_the_spec_config_map_carries_the_request_with_its_requirements_and_no_secret_values() -> None:
    event = seed_event()
    profile = load_profiles().get_or_fail("1xa100")
    spec = JobSpec(request=event.data, run_id=run_id(event), version="0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
                   base_model="huggingface://google-bert/bert-base-cased", output_uri=OUTPUT,
                   s3_endpoint_url="http://minio.storage:9000", work_dir="/scratch/work")

    config_map = build_config_map(event, spec.to_json(), profile, cluster_settings(), owner_uid="uid-123")

    assert {k: v for k, v in config_map.items() if k != "data"} == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "train-test-llm-model-6b0cabd0",
            "namespace": "ml",
            "labels": LABELS,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train-test-llm-model-6b0cabd0",
                                 "uid": "uid-123", "blockOwnerDeletion": False}],
        },
    }
    carried = json.loads(config_map["data"]["spec.json"])
    assert carried["request"]["code"] == {
        "source": SEED_CODE, "handler": "train", "parameters": {},
        "requirements": ["evaluate", "transformers[torch]", "torch", "accelerate"],
    }
    assert carried["request"]["secret_refs"] == [{"env": "HF_TOKEN", "secret": "hf-token", "key": "token"}]
    assert carried["output_uri"] == OUTPUT
    assert JobSpec.model_validate(carried) == spec
    validate(config_map)


def test_a_cpu_request_without_timeout_gets_the_default_deadline_and_no_placement() -> None:
    event = train_event(name="sentiment", base_model="s3://datalake/bases/minilm/",
                        dataset={"uri": "s3://datalake/data/reviews.csv"})
    settings = cluster_settings()

    job = build_job(event, load_profiles().get_or_fail("cpu-small"), settings, output_uri=OUTPUT,
                    base_model="s3://datalake/bases/minilm/")

    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["activeDeadlineSeconds"] == int(settings.train.timeout_s)
    assert set(pod) == {"restartPolicy", "containers", "volumes"}
    container = pod["containers"][0]
    assert "envFrom" not in container
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}}
    validate(job)
