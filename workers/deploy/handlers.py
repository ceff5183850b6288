"""The deploy worker's handlers: plain functions from an event to outcomes, dependencies passed in.

`handle_deploy` resolves the profile and the model, applies the service (idempotently), records it
and follows its readiness for one window. A service that is not ready yet is handed to a follow-up
task (`handle_follow`), scheduled with a delay, that watches for another window and re-schedules
itself until the service is ready, has failed, or the readiness timeout (counted from the apply,
across tasks and worker restarts) or the request's deadline has passed. No worker slot is held
between windows, however long a GPU pod takes to start.

Outcomes: `ServiceReady` is emitted here; failures are raised as `PermanentError` (the task runner
turns them into `DeployFailed`, see `deploy_failure`); transient backend errors are raised as
`RetryableError` and retried by the runner.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from schemas.envelope import CloudEvent, derived_id
from schemas.events import DeployFailed, DeployRequested, ServiceDeleted, ServiceReady, UndeployRequested
from schemas.settings import Settings
from schemas.types import ModelURI, URIScheme
from workers.backends.base import Observation, ServiceBackend
from workers.deploy.endpoints import service_endpoints
from workers.emit import Emitter
from workers.errors import DeadlineExceeded, PermanentError, WorkerError
from workers.observability import get_logger
from workers.profiles import Profiles
from workers.registry import ServiceRecord, ServiceRegistry

log = get_logger(__name__)

#: Schedules `handle_follow` for the event after `countdown` seconds (a delayed Celery task).
FollowUp = Callable[[CloudEvent[DeployRequested], float], None]


class ModelResolver(Protocol):
    """Turns a `store://` reference into the artefact location (the model registry does this)."""

    def resolve(self, uri: str | ModelURI) -> str: ...


def deploy_failure(event: CloudEvent[Any], error: WorkerError) -> DeployFailed:
    """The `DeployFailed` for a deploy or undeploy request that raised `error`."""
    details = {k: v for k, v in error.details.items() if isinstance(k, str)}
    return DeployFailed(service=event.data.service, reason=error.reason, message=error.message[:8192],
                        details=details)


def settle_failure(
    event: CloudEvent[Any], error: WorkerError, *, registry: ServiceRegistry, backend: ServiceBackend
) -> DeployFailed:
    """`deploy_failure`, after recording the failure of a deploy the runner gave up on.

    The runner decides some failures without the handler (a deadline that passed before a follow-up
    task started, retries exhausted); the service must not stay `deploying` in the registry then.
    """
    record = registry.get(event.data.service)
    if isinstance(event.data, DeployRequested) and record is not None and record.event_id == event.id \
            and record.status == "deploying":
        registry.update(record.name, status="failed", reason=error.reason, message=error.message)
        backend.give_up(record.name)
    return deploy_failure(event, error)


def resolve_model(path: ModelURI, models: ModelResolver | None) -> ModelURI:
    """The location to serve from: the request's path, or what its `store://` reference names."""
    if path.scheme is not URIScheme.store:
        return path
    if models is None:
        raise PermanentError(f"{path} needs a model registry, and this worker has none", reason="UnknownModel")
    return ModelURI.parse(models.resolve(path))


def handle_deploy(
    event: CloudEvent[DeployRequested],
    *,
    backend: ServiceBackend,
    registry: ServiceRegistry,
    emitter: Emitter,
    profiles: Profiles,
    settings: Settings,
    models: ModelResolver | None = None,
    follow_up: FollowUp,
) -> None:
    """Apply the requested service and follow it for one window (then hand over to `follow_up`).

    Raises:
        PermanentError: `UnknownProfile`, `UnknownModel`, `UnsupportedModelPath`, `SecretNotFound`,
            the backend's failure reason (e.g. `ModelLoadFailed`), `ReadinessTimeout`.
        RetryableError: the backend is unreachable or answered with a transient error.
    """
    request = event.data
    profile = profiles.get_or_fail(request.profile or settings.default_profile)
    model = resolve_model(request.path, models)
    backend.apply(event, profile, model)
    previous = registry.get(request.service)
    applied_at = previous.applied_at if previous and previous.event_id == event.id else time.time()
    record = registry.upsert(ServiceRecord(
        name=request.service, backend=backend.name, status="deploying", model_name=request.model_name,
        path=str(request.path), task=request.task.value if request.task else None, profile=profile.name,
        event_id=event.id, applied_at=applied_at,
    ))
    log.info("applied %s with profile %s; following readiness", request.service, profile.name)
    _follow(event, record, backend=backend, registry=registry, emitter=emitter, follow_up=follow_up)


def handle_follow(
    event: CloudEvent[DeployRequested],
    *,
    backend: ServiceBackend,
    registry: ServiceRegistry,
    emitter: Emitter,
    follow_up: FollowUp,
) -> None:
    """Follow a service applied earlier for another window, unless a newer request or an undeploy replaced it."""
    record = registry.get(event.data.service)
    if record is None or record.event_id != event.id or record.status != "deploying":
        log.info("no longer following %s: it was undeployed, redeployed or already settled", event.data.service)
        return
    _follow(event, record, backend=backend, registry=registry, emitter=emitter, follow_up=follow_up)


def _follow(
    event: CloudEvent[DeployRequested],
    record: ServiceRecord,
    *,
    backend: ServiceBackend,
    registry: ServiceRegistry,
    emitter: Emitter,
    follow_up: FollowUp,
) -> None:
    policy = backend.follow_policy
    request = event.data
    timeout_end = record.applied_at + policy.timeout_s
    deadline_end = request.deadline.timestamp() if request.deadline else float("inf")
    end = min(timeout_end, deadline_end)
    observation = Observation("pending")
    while (remaining := end - time.time()) > 0:
        observation = backend.follow(request.service, min(policy.window_s, remaining))
        if observation.state == "ready":
            _ready(event, record, observation, registry=registry, emitter=emitter)
            return
        if observation.final:
            _failed(record, registry=registry, backend=backend, error=PermanentError(
                observation.message or f"{request.service} failed", reason=observation.reason or "DeployFailed",
                details=observation.details,
            ))
        if end - time.time() > math.ceil(policy.recheck_delay_s) + policy.window_s / 2:
            log.info("%s not ready yet (%s); checking again in %.1fs", request.service,
                     observation.reason or "pending", policy.recheck_delay_s)
            follow_up(event, policy.recheck_delay_s)
            return
        # Too close to the end to hand over: finish the wait here.
    waited = f"{time.time() - record.applied_at:.0f}s"
    last = f" (last state: {observation.reason}: {observation.message})" if observation.reason else ""
    if deadline_end <= timeout_end:
        error: PermanentError = DeadlineExceeded(f"{request.service} was not ready by the request's deadline{last}")
    else:
        error = PermanentError(f"{request.service} was not ready after {waited}{last}", reason="ReadinessTimeout",
                               details={"timeout_s": policy.timeout_s})
    _failed(record, registry=registry, backend=backend, error=error)


def _ready(event: CloudEvent[DeployRequested], record: ServiceRecord, observation: Observation, *,
           registry: ServiceRegistry, emitter: Emitter) -> None:
    request = event.data
    url = observation.url or ""
    endpoints = service_endpoints(url, request.model_name, request.task)
    registry.update(request.service, status="ready", url=url, external_url=observation.external_url,
                    endpoints=endpoints.model_dump(exclude_none=True), reason=None, message=None)
    emitter.emit(
        ServiceReady(
            service=request.service, model_name=request.model_name, backend=record.backend,
            path=str(request.path), task=request.task, profile=record.profile, url=url,
            external_url=observation.external_url, endpoints=endpoints,
        ),
        cause=event,
        event_id=derived_id(event.id, "ready"),
    )
    log.info("%s is ready at %s", request.service, url)


def _failed(record: ServiceRecord, *, registry: ServiceRegistry, backend: ServiceBackend,
            error: PermanentError) -> None:
    registry.update(record.name, status="failed", reason=error.reason, message=error.message)
    backend.give_up(record.name)
    raise error


def handle_undeploy(
    event: CloudEvent[UndeployRequested],
    *,
    backend: ServiceBackend,
    registry: ServiceRegistry,
    emitter: Emitter,
) -> None:
    """Delete the service and what modelbus made for it, forget it, and emit `ServiceDeleted`.

    Undeploying a service that does not exist is not an error: `ServiceDeleted(existed=False)`.
    """
    name = event.data.service
    existed = backend.delete(name)
    known = registry.remove(name)
    emitter.emit(
        ServiceDeleted(service=name, backend=backend.name, existed=existed or known),
        cause=event,
        event_id=derived_id(event.id, "deleted"),
    )
    log.info("%s deleted (existed: %s)", name, existed or known)
