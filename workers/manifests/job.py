"""The `batch/v1` Job (and its spec ConfigMap) that runs one training request on a cluster, as plain dicts.

Pure functions of (event, job spec, profile, settings): no cluster access, no clock, no randomness, so
the result can be compared with a whole expected manifest and validated against the Kubernetes schema.

Decisions worth knowing:

* The job spec travels in a ConfigMap named like the Job and mounted read-only at `/etc/modelbus`;
  the container runs `python -m training /etc/modelbus/spec.json` in the trainer image. (An env var
  would cap the spec, inline user code included, at what an env var can carry.)
* Secrets travel by reference only: the request's `secret_refs` become `secretKeyRef` envs, and the
  storage credentials Secret (`settings.storage.s3_credentials_secret`) is mounted with `envFrom`.
* `restartPolicy: Never`, `backoffLimit` from settings (a failed pod is retried that many times),
  `activeDeadlineSeconds` from the request's `timeout_s` (or the train settings' default),
  `ttlSecondsAfterFinished` so finished Jobs do not pile up. Scratch space is an `emptyDir` at
  `/scratch`, where the Hugging Face cache lives too.
* Labels carry `modelbus.io/model`, `modelbus.io/project` and `modelbus.io/event-id` so every object can
  be traced to the event that made it.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from schemas.envelope import CloudEvent
from schemas.events import TrainRequested
from schemas.settings import Settings
from workers.manifests.inferenceservice import EVENT_ID_LABEL, MANAGED_BY, PROFILE_LABEL, label_value
from workers.profiles import Profile

MODEL_LABEL = "modelbus.io/model"
PROJECT_LABEL = "modelbus.io/project"
RUN_LABEL = "modelbus.io/run-id"
EVENT_ID_ANNOTATION = "modelbus.io/event-id"
CORRELATION_ANNOTATION = "modelbus.io/correlation-id"
BASE_MODEL_ANNOTATION = "modelbus.io/base-model"
OUTPUT_ANNOTATION = "modelbus.io/output-uri"

CONTAINER = "trainer"
SPEC_DIR = "/etc/modelbus"
SPEC_FILE = "spec.json"
SCRATCH_DIR = "/scratch"


def run_id(event: CloudEvent[TrainRequested]) -> str:
    """The job's name: `train-<model name>-<8 hex digits of the event id>`, a DNS label (<= 63 characters).

    Derived from the event id, so a redelivered request finds the job it already started.
    """
    digest = hashlib.sha256(event.id.encode()).hexdigest()[:8]
    return f"train-{event.data.name[:46].rstrip('-')}-{digest}"


def labels(event: CloudEvent[TrainRequested], profile: Profile) -> dict[str, str]:
    request = event.data
    return {
        MANAGED_BY: "modelbus",
        MODEL_LABEL: request.name,
        PROJECT_LABEL: request.project,
        RUN_LABEL: run_id(event),
        EVENT_ID_LABEL: label_value(event.id),
        PROFILE_LABEL: label_value(profile.name),
    }


def timeout_s(request: TrainRequested, settings: Settings) -> int:
    """How long the job may run (activeDeadlineSeconds), whole seconds."""
    return max(1, math.ceil(request.timeout_s or settings.train.timeout_s))


def build_config_map(
    event: CloudEvent[TrainRequested], spec_json: str, profile: Profile, settings: Settings,
    *, owner_uid: str | None = None,
) -> dict[str, Any]:
    """The ConfigMap holding the job spec; owned by the Job (garbage-collected with it) when its uid is known."""
    meta: dict[str, Any] = {"name": run_id(event), "namespace": settings.kubernetes.namespace,
                            "labels": labels(event, profile)}
    if owner_uid:
        meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": run_id(event),
                                    "uid": owner_uid, "blockOwnerDeletion": False}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {SPEC_FILE: spec_json}}


def container_env(request: TrainRequested) -> list[dict[str, Any]]:
    """Fixed job envs, the request's plain envs, then its secret references (a secret wins over a plain env)."""
    secret_names = {ref.env for ref in request.secret_refs}
    env: list[dict[str, Any]] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HF_HOME", "value": f"{SCRATCH_DIR}/huggingface"},
    ]
    env.extend({"name": e.name, "value": e.value} for e in request.envs if e.name not in secret_names)
    env.extend(
        {"name": ref.env, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key, "optional": False}}}
        for ref in request.secret_refs
    )
    return env


def build_job(event: CloudEvent[TrainRequested], profile: Profile, settings: Settings, *,
              output_uri: str, base_model: str) -> dict[str, Any]:
    """The Job manifest for a training request.

    Args:
        event: the TrainRequested envelope (its id and correlation id are recorded on the Job).
        profile: the resolved resource profile (requests/limits, GPUs, placement).
        settings: namespace, trainer image, backoff limit, TTL, storage credentials, default timeout.
        output_uri: where the job puts the model (recorded as an annotation, for operators).
        base_model: the resolved base model location (idem).

    Returns:
        A dict ready for `BatchV1Api.create_namespaced_job`.
    """
    request = event.data
    k8s = settings.kubernetes
    name = run_id(event)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": k8s.trainer_image,
        "command": ["python", "-m", "training", f"{SPEC_DIR}/{SPEC_FILE}"],
        "workingDir": SCRATCH_DIR,
        "env": container_env(request),
        "resources": profile.resources(),
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": SCRATCH_DIR},
        ],
    }
    if settings.storage.s3_credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.storage.s3_credentials_secret}}]

    pod: dict[str, Any] = {"restartPolicy": "Never"}
    if k8s.service_account:
        pod["serviceAccountName"] = k8s.service_account
    if profile.node_selector:
        pod["nodeSelector"] = dict(profile.node_selector)
    if profile.tolerations:
        pod["tolerations"] = [t.manifest() for t in profile.tolerations]
    if profile.runtime_class:
        pod["runtimeClassName"] = profile.runtime_class
    if profile.priority_class:
        pod["priorityClassName"] = profile.priority_class
    pod["containers"] = [container]
    pod["volumes"] = [
        {"name": "spec", "configMap": {"name": name}},
        {"name": "scratch", "emptyDir": {}},
    ]

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": k8s.namespace,
            "labels": labels(event, profile),
            "annotations": {
                EVENT_ID_ANNOTATION: event.id,
                CORRELATION_ANNOTATION: event.correlationid,
                BASE_MODEL_ANNOTATION: base_model,
                OUTPUT_ANNOTATION: output_uri,
            },
        },
        "spec": {
            "backoffLimit": k8s.job_backoff_limit,
            "activeDeadlineSeconds": timeout_s(request, settings),
            "ttlSecondsAfterFinished": k8s.job_ttl_s,
            "template": {"metadata": {"labels": labels(event, profile)}, "spec": pod},
        },
    }
