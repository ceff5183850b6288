"""Wiring of the train worker: its Celery tasks, with the handlers' dependencies bound.

Two tasks, both thin shims made by `workers.runner.event_task` (decode, deadline, outcome mapping):

* `modelbus.train.requested` (dispatched by the event gateway)                  -> `handle_train`
* `modelbus.train.follow`    (scheduled by the handlers, with a countdown)      -> `handle_follow`
"""

from __future__ import annotations

from functools import partial
from typing import Any

from celery import Celery

from schemas.settings import Settings
from schemas.topology import TRAIN_QUEUE
from workers.artifacts import ArtifactStore
from workers.backends.jobs import JobBackend
from workers.emit import Emitter
from workers.models_registry import ModelRegistry
from workers.profiles import load_profiles
from workers.runner import event_task, follow_up_scheduler
from workers.train.handlers import handle_follow, handle_train, train_failure

FOLLOW_ROUTING_KEY = "train.follow"


def make_backend(settings: Settings) -> JobBackend:
    """The job backend settings choose (`kserve` -> Kubernetes Jobs, `local` -> processes)."""
    if settings.backend == "kserve":
        from workers.backends.k8s_jobs import KubernetesJobs

        return KubernetesJobs(settings)
    from workers.backends.local_jobs import LocalJobs

    return LocalJobs(settings)


def register(app: Celery, *, settings: Settings, emitter: Emitter, backend: JobBackend | None = None) -> None:
    """Register the train worker's tasks on `app`.

    Args:
        backend: an explicit backend (tests, custom clusters); built from settings when omitted.

    Raises:
        ProfilesFileError / KubernetesConfigError: the worker cannot run as configured (at start-up,
            not at the first event).
    """
    backend = backend or make_backend(settings)
    profiles = load_profiles(settings.profiles_file)

    follow_up = follow_up_scheduler(app, TRAIN_QUEUE, FOLLOW_ROUTING_KEY)

    common: dict[str, Any] = {
        "backend": backend, "registry": ModelRegistry.from_settings(settings),
        "store": ArtifactStore.from_settings(settings), "emitter": emitter, "settings": settings,
        "follow_up": follow_up,
    }
    tasks = (
        ("train.requested", partial(handle_train, **common, profiles=profiles)),
        (FOLLOW_ROUTING_KEY, partial(handle_follow, **common)),
    )
    for routing_key, handler in tasks:
        event_task(app, TRAIN_QUEUE, routing_key, handler, train_failure, settings=settings, emitter=emitter)
    app.conf.modelbus_train_backend = backend
