"""Start and stop the three workers as child processes for the demo (and for end-to-end tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika

from producers.connection import pika_parameters
from schemas.settings import Settings
from schemas.topology import WORKER_QUEUES

WORKERS = ("deploy", "train", "invoke")


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child worker use the same broker, backend and state directory."""
    env = dict(os.environ)
    env.update({
        "MODELBUS_BROKER__URL": settings.broker.url,
        "MODELBUS_BACKEND": settings.backend,
        "MODELBUS_STATE_DIR": str(Path(settings.state_dir).resolve()),
        "MODELBUS_LOG_FORMAT": "json",
        "TOKENIZERS_PARALLELISM": "false",
    })
    if settings.storage.root:
        env["MODELBUS_STORAGE__ROOT"] = settings.storage.root
    return env


def consumers(settings: Settings, queue: str) -> int:
    connection = pika.BlockingConnection(pika_parameters(settings.broker))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        connection.close()


@contextmanager
def running_workers(settings: Settings, *, names: tuple[str, ...] = WORKERS, log_dir: Path,
                    timeout: float = 120.0) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Run `modelbus worker NAME` for each name until the block ends; wait until each consumes its queue.

    Raises:
        RuntimeError: a worker exited or did not start consuming within `timeout` (its log is named).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = []
    try:
        for name in names:
            log = (log_dir / f"worker-{name}.log").open("wb")
            logs.append(log)
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "producers.cli", "worker", name, "--concurrency", "4"],
                env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        for name, proc in procs.items():
            queue = WORKER_QUEUES[name].name
            while consumers(settings, queue) == 0:
                if proc.poll() is not None:
                    raise RuntimeError(f"the {name} worker exited ({proc.returncode}); see {log_dir}/worker-{name}.log")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {name} worker did not start within {timeout:g}s; see its log")
                time.sleep(0.2)
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in logs:
            log.close()
