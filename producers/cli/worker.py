"""`modelbus worker deploy|train|invoke`: run one worker in the foreground."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from producers.cli.common import settings
from schemas.topology import WORKER_QUEUES


class WorkerName(StrEnum):
    deploy = "deploy"
    train = "train"
    invoke = "invoke"


def worker(
    name: Annotated[WorkerName, typer.Argument(help="Which worker to run.")],
    concurrency: Annotated[int, typer.Option(help="Tasks run at once (deploy/train).")] = 4,
    pool: Annotated[str, typer.Option(help="Celery pool: threads, prefork or solo (deploy/train).")] = "threads",
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
) -> None:
    """Run a worker: consume its queue, handle events, publish outcomes (Ctrl-C stops it cleanly)."""
    from workers.observability import configure_logging, start_metrics_server

    cfg = settings()
    if metrics_port is not None:
        cfg = cfg.model_copy(update={"metrics_port": metrics_port})
    configure_logging(cfg.log_level, cfg.log_format)
    start_metrics_server(cfg.metrics_port)
    if name is WorkerName.invoke:
        from workers.invoke import run

        run(cfg)
        return
    from workers.app import create_app

    app = create_app(cfg, (name.value,))
    app.worker_main(
        [
            "worker",
            f"--queues={WORKER_QUEUES[name.value].task_queue}",
            f"--hostname={name.value}@%h",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--loglevel={cfg.log_level}",
        ]
    )
