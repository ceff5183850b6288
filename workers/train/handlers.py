"""The train worker's handlers: plain functions from a `TrainRequested` to outcomes, dependencies passed in.

`handle_train` checks what the worker can check (profile, a `store://` base model), submits the job
(idempotently: its run id and model version derive from the event id) and follows it for one window,
relaying progress as `TrainProgress` events. A job still running is handed to a follow-up task
(`handle_follow`, a delayed Celery task) that watches for another window and re-schedules itself, so no
worker slot is held for the hours a fine-tune may take.

When the job succeeds its model folder is already complete in the artefact store; only then is the
version recorded in the model registry and `ModelLogged` published (then, if the request asks, a
`DeployRequested` for `store://project/model/name:version`, caused by the ModelLogged). When it fails,
whatever it may have left in the store is deleted and a `PermanentError` carries the job's reason and
log tail into `TrainFailed` (see `train_failure`). A redelivered request whose version is already
recorded publishes the same outcome events again, with the same ids.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from schemas.envelope import CloudEvent, derived_id
from schemas.events import DeployAfterTraining, DeployRequested, ModelLogged, TrainFailed, TrainProgress, TrainRequested
from schemas.settings import Settings
from schemas.types import ModelURI, Task, URIScheme
from training.protocol import Progress
from training.spec import RESULT_FILE, JobSpec
from workers.artifacts import ArtifactError, ArtifactStore, join
from workers.backends.jobs import JobBackend, TrainJob
from workers.emit import Emitter
from workers.errors import DeadlineExceeded, PermanentError, RetryableError, WorkerError
from workers.manifests.job import run_id, timeout_s
from workers.models_registry import ModelRegistry, ModelVersion
from workers.observability import get_logger
from workers.profiles import Profiles

log = get_logger(__name__)

#: Schedules `handle_follow` for the event after `countdown` seconds (a delayed Celery task).
FollowUp = Callable[[CloudEvent[TrainRequested], float], None]


def train_failure(event: CloudEvent[Any], error: WorkerError) -> TrainFailed:
    """The `TrainFailed` for a training request that raised `error` (with the job's log tail, if any)."""
    tail = error.details.get("log_tail")
    return TrainFailed(project=event.data.project, name=event.data.name, reason=error.reason,
                       message=error.message[:8192], log_tail=str(tail)[-65_536:] if tail else None)


def model_version(event: CloudEvent[TrainRequested]) -> str:
    """The version id the request's model gets (stable across redeliveries)."""
    return derived_id(event.id, "model-version")


def resolve_base_model(base: ModelURI, registry: ModelRegistry) -> str:
    """Where the job loads the base model from: a `store://` reference becomes its artefact path."""
    if base.scheme is URIScheme.store:
        return registry.resolve(base)
    if base.scheme is URIScheme.pvc:
        raise PermanentError(f"{base}: pvc:// base models are not supported for training; use s3:// or a Hub id",
                             reason="UnsupportedModelPath")
    return str(base)


def handle_train(
    event: CloudEvent[TrainRequested],
    *,
    backend: JobBackend,
    registry: ModelRegistry,
    store: ArtifactStore,
    emitter: Emitter,
    settings: Settings,
    profiles: Profiles,
    follow_up: FollowUp,
) -> None:
    """Submit the training job and follow it for one window (then hand over to `follow_up`).

    Raises:
        PermanentError: `UnknownProfile`, `UnknownModel` (store:// base model), `SecretNotFound`, or the
            job's failure reason (`UnknownColumn`, `InvalidHyperParameter`, `UnknownBaseModel`,
            `CustomCodeFailed`, `Timeout`, ...).
        RetryableError: the backend or the artefact store is unreachable.
    """
    request = event.data
    done = registry.find_by_event(event.id)
    if done is not None:
        log.info("%s was already logged as %s; publishing its outcome again", request.name, done.store_uri)
        _announce(event, done, emitter=emitter)
        return
    profile = profiles.get_or_fail(request.profile or settings.default_profile)
    version = model_version(event)
    spec = JobSpec(
        request=request, run_id=run_id(event), version=version,
        base_model=resolve_base_model(request.base_model, registry),
        output_uri=store.version_uri(request.project, request.name, version),
        s3_endpoint_url=settings.storage.s3_endpoint_url, s3_region=settings.storage.s3_region,
    )
    limit = float(timeout_s(request, settings))
    if request.deadline is not None:  # the job must not outlive the request's deadline
        limit = max(1.0, min(limit, request.deadline.timestamp() - time.time()))
    backend.submit(TrainJob(event=event, spec=spec, profile=profile, timeout_s=limit))
    log.info("submitted training run %s (profile %s)", spec.run_id, profile.name)
    _follow(event, spec.output_uri, backend=backend, registry=registry, store=store, emitter=emitter,
            settings=settings, follow_up=follow_up)


def handle_follow(
    event: CloudEvent[TrainRequested],
    *,
    backend: JobBackend,
    registry: ModelRegistry,
    store: ArtifactStore,
    emitter: Emitter,
    settings: Settings,
    follow_up: FollowUp,
) -> None:
    """Follow a job submitted earlier for another window (nothing to do once its model is recorded)."""
    if registry.find_by_event(event.id) is not None:
        return
    request = event.data
    output_uri = store.version_uri(request.project, request.name, model_version(event))
    _follow(event, output_uri, backend=backend, registry=registry, store=store, emitter=emitter,
            settings=settings, follow_up=follow_up)


def _follow(
    event: CloudEvent[TrainRequested],
    output_uri: str,
    *,
    backend: JobBackend,
    registry: ModelRegistry,
    store: ArtifactStore,
    emitter: Emitter,
    settings: Settings,
    follow_up: FollowUp,
) -> None:
    request = event.data
    rid = run_id(event)
    relay = _progress_relay(event, emitter=emitter, interval_s=settings.train.progress_interval_s)
    deadline = request.deadline.timestamp() if request.deadline else float("inf")
    window = min(backend.follow_policy.window_s, max(0.0, deadline - time.time()))
    observation = backend.follow(rid, window, relay)
    if observation.state == "ready" or (observation.state == "missing" and _has_result(store, output_uri)):
        _finish(event, output_uri, registry=registry, store=store, emitter=emitter)
        return
    if observation.state == "pending":
        if time.time() >= deadline:
            backend.cancel(rid)
            _discard(store, output_uri)
            raise DeadlineExceeded(f"training run {rid} had not finished by the request's deadline")
        follow_up(event, backend.follow_policy.recheck_delay_s)
        return
    _discard(store, output_uri)
    reason = observation.reason or "TrainingFailed"
    message = observation.message or f"training run {rid} failed"
    if observation.state == "missing":
        reason, message = "JobMissing", f"training run {rid} vanished before it logged a model"
    raise PermanentError(message, reason=reason, details={"run_id": rid, **observation.details})


def _progress_relay(event: CloudEvent[TrainRequested], *, emitter: Emitter,
                    interval_s: float) -> Callable[[Progress], None]:
    """Publish progress lines as TrainProgress events, at most one per `interval_s` (evaluations always)."""
    last = [0.0]
    request = event.data

    def relay(progress: Progress) -> None:
        now = time.monotonic()
        if not progress.metrics and now - last[0] < interval_s:
            return
        last[0] = now
        emitter.emit(TrainProgress(project=request.project, name=request.name, run_id=run_id(event),
                                   epoch=progress.epoch, step=progress.step, max_steps=progress.max_steps,
                                   loss=progress.loss, metrics=progress.metrics), cause=event)

    return relay


def _task(value: object) -> Task | None:
    try:
        return Task(str(value)) if value else None
    except ValueError:
        return None


def _has_result(store: ArtifactStore, output_uri: str) -> bool:
    try:
        return store.exists(join(output_uri, RESULT_FILE))
    except ArtifactError:
        return False


def _discard(store: ArtifactStore, output_uri: str) -> None:
    """Remove anything a failed job may have left at its version's place (normally nothing)."""
    try:
        store.delete_tree(output_uri)
    except ArtifactError as exc:
        log.warning("could not clean %s after a failed job: %s", output_uri, exc)


def _finish(event: CloudEvent[TrainRequested], output_uri: str, *, registry: ModelRegistry,
            store: ArtifactStore, emitter: Emitter) -> None:
    request = event.data
    try:
        result = json.loads(store.read_text(join(output_uri, RESULT_FILE)))
    except ArtifactError as exc:
        raise RetryableError(f"the job finished but its result cannot be read: {exc}", delay=2.0,
                             reason="ArtifactStoreUnavailable") from exc
    task = _task(result.get("task"))
    version = registry.record(ModelVersion(
        project=request.project, name=request.name, version=model_version(event),
        base_model=str(result.get("base_model") or request.base_model), path=output_uri,
        task=task.value if task else None,
        metrics={k: float(v) for k, v in (result.get("metrics") or {}).items() if isinstance(v, int | float)},
        labels=result.get("labels"), created=datetime.now(UTC), event_id=event.id,
    ))
    log.info("logged %s (%s)", version.store_uri, version.path)
    _announce(event, version, emitter=emitter)


def _announce(event: CloudEvent[TrainRequested], version: ModelVersion, *, emitter: Emitter) -> None:
    """Publish ModelLogged (and the chained DeployRequested); ids derive from the request's id."""
    request = event.data
    logged = emitter.emit(
        ModelLogged(project=version.project, name=version.name, version=version.version, path=version.path,
                    store_uri=version.store_uri, base_model=version.base_model,
                    task=_task(version.task), metrics=version.metrics,
                    labels=version.labels, created=version.created),
        cause=event, event_id=derived_id(event.id, "model.logged"),
    )
    if request.deploy is None:
        return
    deploy = request.deploy
    emitter.emit(
        DeployRequested(service=deploy.service, path=ModelURI.parse(version.store_uri), model_name=deploy.model_name,
                        task=_task(version.task), profile=deploy.profile,
                        replicas=deploy.replicas, runtime=deploy.runtime, reply_to=request.reply_to),
        cause=logged, event_id=derived_id(event.id, DeployAfterTraining.id_purpose),
    )
