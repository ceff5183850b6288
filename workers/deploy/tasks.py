"""Wiring of the deploy worker: its Celery tasks, with the handlers' dependencies bound.

Three tasks, all thin shims made by `workers.runner.event_task` (decode, deadline, outcome mapping):

* `modelbus.deploy.requested`   (dispatched by the event gateway)  -> `handle_deploy`
* `modelbus.undeploy.requested` (dispatched by the event gateway)  -> `handle_undeploy`
* `modelbus.deploy.follow`      (scheduled by the handlers, with a countdown) -> `handle_follow`
"""

from __future__ import annotations

from functools import partial
from typing import Any

from celery import Celery

from schemas.settings import Settings
from schemas.topology import DEPLOY_QUEUE
from workers.backends.base import ServiceBackend
from workers.deploy.handlers import deploy_failure, handle_deploy, handle_follow, handle_undeploy, settle_failure
from workers.emit import Emitter
from workers.models_registry import ModelRegistry
from workers.profiles import load_profiles
from workers.registry import ServiceRegistry
from workers.runner import event_task, follow_up_scheduler

FOLLOW_ROUTING_KEY = "deploy.follow"


def make_backend(settings: Settings) -> ServiceBackend:
    """The backend settings choose (`kserve` or `local`)."""
    if settings.backend == "kserve":
        from workers.backends.kserve import KServeBackend

        return KServeBackend(settings)
    from workers.backends.local import LocalBackend

    return LocalBackend(settings)


def register(app: Celery, *, settings: Settings, emitter: Emitter, backend: ServiceBackend | None = None) -> None:
    """Register the deploy worker's tasks on `app`.

    Args:
        backend: an explicit backend (tests, custom clusters); built from settings when omitted.

    Raises:
        ProfilesFileError / KubernetesConfigError: the worker cannot run as configured (at start-up,
            not at the first event).
    """
    backend = backend or make_backend(settings)
    registry = ServiceRegistry(settings.state_dir)
    profiles = load_profiles(settings.profiles_file)
    models = ModelRegistry.from_settings(settings)

    follow_up = follow_up_scheduler(app, DEPLOY_QUEUE, FOLLOW_ROUTING_KEY)

    common: dict[str, Any] = {"backend": backend, "registry": registry, "emitter": emitter}
    tasks = (
        ("deploy.requested", partial(handle_deploy, **common, profiles=profiles, settings=settings, models=models,
                                     follow_up=follow_up)),
        (FOLLOW_ROUTING_KEY, partial(handle_follow, **common, follow_up=follow_up)),
        ("undeploy.requested", partial(handle_undeploy, **common)),
    )
    settled = partial(settle_failure, registry=registry, backend=backend)
    for routing_key, handler in tasks:
        failure = deploy_failure if routing_key.startswith("undeploy") else settled
        event_task(app, DEPLOY_QUEUE, routing_key, handler, failure, settings=settings, emitter=emitter)
    app.conf.modelbus_deploy_backend = backend
