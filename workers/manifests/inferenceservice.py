"""The KServe `InferenceService` (and helper objects) for a deploy request, as plain dicts.

Pure functions of (event, profile, settings): no cluster access, no clock, no randomness, so the
result can be compared with a golden YAML file and validated against the CRD schema in tests.

Decisions worth knowing:

* Hub models (`huggingface://`, `hf://`) are passed as `--model_id`: the runtime downloads them
  itself with `HF_TOKEN` from the container env. (KServe's storage initializer does not see the
  predictor's env, a long-standing trap, kserve#4400.)
* `s3://` and `pvc://` models go in `storageUri`; their credentials reach the storage initializer
  through the predictor's service account (KServe's credential builder reads the secrets attached to
  it). When the request references secrets and no service account is configured, a ServiceAccount
  listing those secrets is built too, named `modelbus-<service>`, and deleted with the service.
* Labels carry `modelbus.io/service` and `modelbus.io/event-id` so every object modelbus made can be
  found and traced to the event that made it.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from schemas.envelope import CloudEvent
from schemas.events import DeployRequested
from schemas.settings import Settings
from schemas.types import ModelURI, URIScheme
from workers.errors import PermanentError
from workers.manifests.server_args import runtime_args
from workers.profiles import Profile

API_GROUP = "serving.kserve.io"
API_VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"

MANAGED_BY = "app.kubernetes.io/managed-by"
SERVICE_LABEL = "modelbus.io/service"
EVENT_ID_LABEL = "modelbus.io/event-id"
PROFILE_LABEL = "modelbus.io/profile"
EVENT_ID_ANNOTATION = "modelbus.io/event-id"
CORRELATION_ANNOTATION = "modelbus.io/correlation-id"
MODEL_URI_ANNOTATION = "modelbus.io/model-uri"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_value(text: str) -> str:
    """`text` if it is a valid label value, else a stable digest of it (label values are restricted)."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    return "h-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def service_account_name(service: str) -> str:
    return f"modelbus-{service}"


def storage_uri(model: ModelURI) -> str | None:
    """The `storageUri` for a model KServe's storage initializer fetches; None for Hub ids."""
    if model.is_hub:
        return None
    if model.scheme in (URIScheme.s3, URIScheme.pvc):
        return str(model)
    if model.scheme is URIScheme.file:
        raise PermanentError(
            f"{model} is on the worker's disk, which a cluster cannot read; use s3:// or pvc://, or backend local",
            reason="UnsupportedModelPath",
        )
    raise PermanentError(f"{model} must be resolved before building a manifest", reason="UnsupportedModelPath")


def model_args(model: ModelURI) -> list[str]:
    """`--model_id` (and the revision from the URI) for Hub ids; nothing for storage URIs."""
    if not model.is_hub:
        return []
    args = [f"--model_id={model.repo}"]
    if model.revision:
        args.append(f"--model_revision={model.revision}")
    return args


def container_env(request: DeployRequested) -> list[dict[str, Any]]:
    """Plain envs, then secret references as `secretKeyRef` (a secret replaces a plain env of its name)."""
    secret_names = {ref.env for ref in request.secret_refs}
    env: list[dict[str, Any]] = [{"name": e.name, "value": e.value} for e in request.envs if e.name not in secret_names]
    for ref in request.secret_refs:
        env.append({
            "name": ref.env,
            "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key, "optional": False}},
        })
    return env


def metadata(event: CloudEvent[DeployRequested], profile: Profile, settings: Settings) -> dict[str, Any]:
    request = event.data
    labels = {
        **request.labels,
        MANAGED_BY: "modelbus",
        SERVICE_LABEL: request.service,
        EVENT_ID_LABEL: label_value(event.id),
        PROFILE_LABEL: label_value(profile.name),
    }
    return {"name": request.service, "namespace": settings.kubernetes.namespace, "labels": labels}


def needs_service_account(request: DeployRequested, model: ModelURI, settings: Settings) -> bool:
    """A per-service account is made when storage downloads need the request's secrets."""
    return (not model.is_hub and bool(request.secret_refs)
            and settings.kubernetes.service_account is None)


def build_service_account(
    event: CloudEvent[DeployRequested], profile: Profile, settings: Settings
) -> dict[str, Any]:
    """A ServiceAccount listing the referenced secrets, for KServe's storage credential builder."""
    request = event.data
    meta = metadata(event, profile, settings)
    meta["name"] = service_account_name(request.service)
    secrets = sorted({ref.secret for ref in request.secret_refs})
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta,
            "secrets": [{"name": name} for name in secrets]}


def build_inference_service(
    event: CloudEvent[DeployRequested],
    profile: Profile,
    settings: Settings,
    *,
    model: ModelURI | None = None,
) -> dict[str, Any]:
    """The `InferenceService` manifest for a deploy request.

    Args:
        event: the DeployRequested envelope (its id and correlation id are recorded on the object).
        profile: the resolved resource profile.
        settings: namespace, deployment mode, service account, readiness timeout.
        model: where the model really is when `event.data.path` is a `store://` reference
            (resolved through the model registry by the caller); defaults to the request's path.

    Returns:
        A dict ready for `CustomObjectsApi.create_namespaced_custom_object`.

    Raises:
        PermanentError: `UnsupportedModelPath` for locations a cluster cannot read (file://).
    """
    request = event.data
    model = model or request.path
    k8s = settings.kubernetes

    meta = metadata(event, profile, settings)
    annotations = {
        DEPLOYMENT_MODE_ANNOTATION: k8s.deployment_mode,
        EVENT_ID_ANNOTATION: event.id,
        CORRELATION_ANNOTATION: event.correlationid,
        MODEL_URI_ANNOTATION: str(request.path),
    }
    if k8s.deployment_mode == "Serverless":
        # Knative gives up on a revision after 10 minutes by default; large models need longer.
        annotations[PROGRESS_DEADLINE_ANNOTATION] = f"{max(1, math.ceil(k8s.ready_timeout_s / 60))}m"
    meta["annotations"] = annotations

    model_spec: dict[str, Any] = {
        "modelFormat": {"name": "huggingface"},
        "protocolVersion": "v2",
        "args": [*runtime_args(request), *model_args(model)],
        "resources": profile.resources(),
    }
    if profile.runtime:
        model_spec["runtime"] = profile.runtime
    uri = storage_uri(model)
    if uri is not None:
        model_spec["storageUri"] = uri
    env = container_env(request)
    if env:
        model_spec["env"] = env

    predictor: dict[str, Any] = {"minReplicas": request.replicas, "maxReplicas": request.replicas}
    if k8s.service_account:
        predictor["serviceAccountName"] = k8s.service_account
    elif needs_service_account(request, model, settings):
        predictor["serviceAccountName"] = service_account_name(request.service)
    if profile.node_selector:
        predictor["nodeSelector"] = dict(profile.node_selector)
    if profile.tolerations:
        predictor["tolerations"] = [t.manifest() for t in profile.tolerations]
    if profile.runtime_class:
        predictor["runtimeClassName"] = profile.runtime_class
    if profile.priority_class:
        predictor["priorityClassName"] = profile.priority_class
    predictor["model"] = model_spec

    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": meta,
        "spec": {"predictor": predictor},
    }


def build_manifests(
    event: CloudEvent[DeployRequested],
    profile: Profile,
    settings: Settings,
    *,
    model: ModelURI | None = None,
) -> list[dict[str, Any]]:
    """Every object a deploy creates, in apply order (ServiceAccount first when one is needed)."""
    model = model or event.data.path
    objects = []
    if needs_service_account(event.data, model, settings):
        objects.append(build_service_account(event, profile, settings))
    objects.append(build_inference_service(event, profile, settings, model=model))
    return objects
