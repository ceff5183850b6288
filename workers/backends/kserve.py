"""The `kserve` backend: InferenceServices through the official `kubernetes` client.

This is the only module that talks to the Kubernetes API for serving. `ApiException` and
urllib3/socket errors are mapped to the outcome tree by `workers.backends.k8s_errors.api_error` (shared
with training): 403/401 -> PermanentError (`Forbidden`/`Unauthorized`), 400/422 -> PermanentError
(`Invalid`), 404 of a collection -> PermanentError (`NotFound`: CRD or namespace missing),
409/429/5xx and unreachable servers -> RetryableError.

Apply is create-or-patch: a 409 on create reads the object; when it already carries this event's id
nothing is sent (a redelivered event changes nothing), otherwise the desired spec is merge-patched
(fields modelbus no longer wants are nulled). Following readiness is a resourceVersion-aware watch
that reconnects on dropped streams and resyncs on 410 Gone, bounded by the caller's window.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from schemas.envelope import CloudEvent
from schemas.events import DeployRequested
from schemas.settings import Settings
from schemas.types import ModelURI
from workers.backends.base import Applied, BackendName, FollowPolicy, Observation
from workers.backends.k8s_errors import UNREACHABLE, api_error, follow_watch, mapped_errors, watch_arguments, watch_one
from workers.backends.kserve_status import interpret
from workers.errors import PermanentError, RetryableError
from workers.manifests.inferenceservice import (
    API_GROUP,
    API_VERSION,
    EVENT_ID_LABEL,
    MANAGED_BY,
    PLURAL,
    SERVICE_LABEL,
    build_manifests,
    label_value,
    service_account_name,
)
from workers.observability import get_logger, metered
from workers.profiles import Profile

log = get_logger(__name__)

class KubernetesConfigError(ValueError):
    """No usable cluster configuration (a deployment error, reported at worker start)."""


def api_client_from_settings(settings: Settings) -> client.ApiClient:
    """An ApiClient from the kubeconfig in settings, or the in-cluster service account."""
    k8s = settings.kubernetes
    try:
        if k8s.kubeconfig is not None:
            return config.new_client_from_config(  # type: ignore[no-any-return,no-untyped-call]
                config_file=str(k8s.kubeconfig), context=k8s.context
            )
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    except config.ConfigException as exc:
        raise KubernetesConfigError(f"no Kubernetes configuration: {exc}") from exc


def null_removed(old: Any, new: Any) -> Any:
    """A JSON merge patch turning `old` into `new`: `new`, plus None for every key `old` has and `new` lacks."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    patch = {key: null_removed(old.get(key), value) for key, value in new.items()}
    patch.update({key: None for key in old if key not in new})
    return patch


class KServeBackend:
    """Serve models as KServe InferenceServices.

    Args:
        settings: namespace, timeouts, deployment mode (the `kubernetes` group).
        api_client: an explicit client (tests, custom auth); built from settings when omitted.
    """

    name: BackendName = "kserve"
    metric_name = "kserve"  # the backend label of modelbus_backend_operations_total

    def __init__(self, settings: Settings, *, api_client: client.ApiClient | None = None) -> None:
        self.settings = settings
        k8s = settings.kubernetes
        self.namespace = k8s.namespace
        self._api_client = api_client or api_client_from_settings(settings)
        self.custom = client.CustomObjectsApi(self._api_client)
        self.core = client.CoreV1Api(self._api_client)
        self.follow_policy = FollowPolicy(k8s.ready_timeout_s, k8s.watch_window_s, k8s.recheck_delay_s)
        self._timeout = k8s.api_timeout_s

    def close(self) -> None:
        self._api_client.close()  # type: ignore[no-untyped-call]

    # -- apply ----------------------------------------------------------------------------------------
    @metered("apply")
    def apply(self, event: CloudEvent[DeployRequested], profile: Profile, model: ModelURI) -> Applied:
        created = changed = False
        for obj in build_manifests(event, profile, self.settings, model=model):
            made, patched = self._apply_one(obj, event.id)
            if obj["kind"] == "InferenceService":
                created = made
            changed = changed or made or patched
        return Applied(created=created, changed=changed)

    def _apply_one(self, obj: dict[str, Any], event_id: str) -> tuple[bool, bool]:
        kind, name = obj["kind"], obj["metadata"]["name"]
        try:
            self._create(obj)
            log.info("created %s %s", kind, name)
            return True, False
        except ApiException as exc:
            if exc.status != 409:
                raise api_error(exc, f"create {kind} {name}") from exc
        except UNREACHABLE as exc:
            raise RetryableError(f"Kubernetes API unreachable while creating {kind} {name}: {exc}",
                                 delay=2.0, reason="KubernetesUnreachable") from exc
        existing = self._read(kind, name)
        if existing is None:  # deleted between our create and read: try again shortly
            raise RetryableError(f"{kind} {name} vanished while being applied", delay=0.5, reason="Conflict")
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY) != "modelbus":
            raise PermanentError(
                f"{kind} {name} already exists in namespace {self.namespace} and was not created by modelbus",
                reason="NotManaged",
            )
        if labels.get(EVENT_ID_LABEL) == label_value(event_id):
            log.info("%s %s already applied for this event; nothing to change", kind, name)
            return False, False
        patch = {
            "metadata": {"labels": obj["metadata"]["labels"], "annotations": obj["metadata"].get("annotations", {})},
            **{key: null_removed(existing.get(key), value) for key, value in obj.items()
               if key in ("spec", "secrets")},
        }
        with mapped_errors(f"patch {kind} {name}"):
            self._patch(kind, name, patch)
        log.info("patched %s %s", kind, name)
        return False, True

    def _create(self, obj: dict[str, Any]) -> None:
        if obj["kind"] == "ServiceAccount":
            # The client serializes a plain dict as it is; the manifest stays one kind of data throughout.
            self.core.create_namespaced_service_account(
                self.namespace, obj, _request_timeout=self._timeout  # type: ignore[arg-type]
            )
        else:
            self.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, PLURAL, obj, _request_timeout=self._timeout
            )

    def _patch(self, kind: str, name: str, patch: dict[str, Any]) -> None:
        if kind == "ServiceAccount":
            self.core.patch_namespaced_service_account(name, self.namespace, patch, _request_timeout=self._timeout)
        else:
            self.custom.patch_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, PLURAL, name, patch, _request_timeout=self._timeout
            )

    def _read(self, kind: str, name: str) -> dict[str, Any] | None:
        with mapped_errors(f"read {kind} {name}"):
            try:
                if kind == "ServiceAccount":
                    account = self.core.read_namespaced_service_account(
                        name, self.namespace, _request_timeout=self._timeout
                    )
                    found: Any = self._api_client.sanitize_for_serialization(account)  # type: ignore[no-untyped-call]
                else:
                    found = self.custom.get_namespaced_custom_object(
                        API_GROUP, API_VERSION, self.namespace, PLURAL, name, _request_timeout=self._timeout
                    )
                return dict(found)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    # -- follow ---------------------------------------------------------------------------------------
    def fallback_url(self, name: str) -> str:
        return f"http://{name}-predictor.{self.namespace}.svc.cluster.local"

    def observe(self, name: str) -> tuple[Observation, str | None]:
        """The service's state now, and the resourceVersion to watch from."""
        obj = self._read("InferenceService", name)
        if obj is None:
            return Observation("missing", reason="NotFound",
                               message=f"InferenceService {name} does not exist in {self.namespace}"), None
        observation = self._external(interpret(obj, fallback_url=self.fallback_url(name)), name)
        return observation, (obj.get("metadata") or {}).get("resourceVersion")

    def _external(self, observation: Observation, name: str) -> Observation:
        domain = self.settings.kubernetes.ingress_domain
        if observation.state == "ready" and observation.external_url is None and domain:
            external = f"https://{name}-{self.namespace}.{domain}"
            return Observation("ready", url=observation.url, external_url=external)
        return observation

    @metered("follow")
    def follow(self, name: str, window_s: float) -> Observation:
        """Watch one InferenceService until its state is final or `window_s` has passed."""
        return follow_watch(f"InferenceService {name}", window_s, observe=lambda: self.observe(name),
                            watch_once=lambda version, remaining, last: self._watch(name, version, remaining, last))

    def _watch(self, name: str, version: str | None, remaining: float,
               last: Observation) -> tuple[Observation, str | None]:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        events = stream.stream(  # type: ignore[no-untyped-call]
            self.custom.list_namespaced_custom_object, API_GROUP, API_VERSION, self.namespace, PLURAL,
            **watch_arguments(name, version, remaining, self._timeout),
        )
        return watch_one(
            f"InferenceService {name}", name, stream, events, version=version, remaining=remaining, last=last,
            interpret=lambda obj: self._external(interpret(obj, fallback_url=self.fallback_url(name)), name),
        )

    @metered("give_up")
    def give_up(self, name: str) -> None:
        """Keep a failed InferenceService: its events and pod logs are what an operator debugs with."""

    # -- delete ---------------------------------------------------------------------------------------
    @metered("delete")
    def delete(self, name: str) -> bool:
        existed = self._delete("InferenceService", name)
        account = self._read("ServiceAccount", service_account_name(name))
        labels = ((account or {}).get("metadata") or {}).get("labels") or {}
        if account is not None and labels.get(SERVICE_LABEL) == name and labels.get(MANAGED_BY) == "modelbus":
            self._delete("ServiceAccount", service_account_name(name))
        return existed

    def _delete(self, kind: str, name: str) -> bool:
        with mapped_errors(f"delete {kind} {name}"):
            try:
                if kind == "ServiceAccount":
                    self.core.delete_namespaced_service_account(name, self.namespace, _request_timeout=self._timeout)
                else:
                    self.custom.delete_namespaced_custom_object(
                        API_GROUP, API_VERSION, self.namespace, PLURAL, name, _request_timeout=self._timeout
                    )
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
        log.info("deleted %s %s", kind, name)
        return True
