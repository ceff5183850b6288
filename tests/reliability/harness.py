"""Tools the fault tests break things with: worker processes, a tap on every event, the management API.

* `WorkerProcess` runs `python -m producers.cli worker NAME` like an operator would, with its log in
  a file, and can be SIGKILLed and started again.
* `EventTap` is a durable queue bound to `#` on the events exchange (or any queue, e.g. a reply
  queue); it survives its own connection being closed, so nothing published while the test looks
  away is missed.
* `close_connections` force-closes client connections of one vhost through the management API,
  the way a broker restart or a network cut looks from the client side, without touching other
  vhosts on a shared broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions as pe

from producers.connection import pika_parameters
from producers.demo.processes import worker_env
from schemas.envelope import CloudEvent, decode
from schemas.settings import Settings
from schemas.topology import EXCHANGE, WORKER_QUEUES
from tests.conftest import management

#: Connections whose name starts with this are the test's own and are never force-closed.
TEST_CONNECTION_PREFIX = "test-"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def consumers(settings: Settings, queue: str) -> int:
    """Consumers of `queue` now (0 when it does not exist yet)."""
    params = pika_parameters(settings.broker)
    params.client_properties = {"connection_name": f"{TEST_CONNECTION_PREFIX}probe"}
    connection = pika.BlockingConnection(params)
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    except pe.ChannelClosedByBroker:
        return 0
    finally:
        if connection.is_open:
            connection.close()


class WorkerProcess:
    """`modelbus worker NAME` as a child process (own session, so its children die with it)."""

    def __init__(self, name: str, settings: Settings, log_dir: Path, *, env: dict[str, str] | None = None,
                 metrics_port: int | None = None, concurrency: int = 4) -> None:
        self.name = name
        self.settings = settings
        self.log_dir = log_dir
        self.env = {**worker_env(settings), **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), self.env.get("PYTHONPATH")]))
        self.metrics_port = metrics_port
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"worker-{self.name}.log"

    def _queues(self) -> list[str]:
        queue = WORKER_QUEUES[self.name]
        return [queue.name] if self.name == "invoke" else [queue.name, queue.task_queue]

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        """Start the worker and return once it consumes its queue(s)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        wait_for(lambda: all(consumers(self.settings, q) == 0 for q in self._queues()), timeout=30,
                 what="the previous worker's consumers to go away")
        argv = [sys.executable, "-m", "producers.cli", "worker", self.name, "--concurrency", str(self.concurrency)]
        if self.metrics_port is not None:
            argv += ["--metrics-port", str(self.metrics_port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=_REPO_ROOT)
        self.starts += 1

        def consuming() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AssertionError(f"the {self.name} worker exited ({code}):\n{self.log()[-3000:]}")
            return all(consumers(self.settings, q) > 0 for q in self._queues())

        wait_for(consuming, timeout=timeout, what=f"the {self.name} worker to consume", interval=0.1)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no drain, no acks, no goodbye to the broker."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EventTap:
    """Collects every message routed to a private durable queue, across lost connections.

    Args:
        broker_url: the test vhost.
        bindings: routing keys on the events exchange (`#`: everything); empty for a plain queue
            (e.g. a reply_to queue).
    """

    def __init__(self, broker_url: str, *, bindings: Iterable[str] = ("#",), name: str | None = None) -> None:
        self.broker_url = broker_url
        self.queue = name or f"test.tap.{uuid.uuid4().hex[:10]}"
        self.bindings = tuple(bindings)
        self.messages: list[tuple[pika.BasicProperties, bytes]] = []
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._connect()

    def _connect(self) -> None:
        params = pika.URLParameters(self.broker_url)
        params.client_properties = {"connection_name": f"{TEST_CONNECTION_PREFIX}tap-{self.queue}"}
        self._connection = pika.BlockingConnection(params)
        self._channel = self._connection.channel()
        self._channel.queue_declare(self.queue, durable=True)
        for key in self.bindings:
            self._channel.queue_bind(self.queue, EXCHANGE, routing_key=key)
        self._channel.basic_qos(prefetch_count=500)
        self._channel.basic_consume(self.queue, self._on_message)

    def _on_message(self, channel: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        self.messages.append((props, body))
        channel.basic_ack(method.delivery_tag)

    def poll(self, seconds: float = 0.05) -> None:
        try:
            assert self._connection is not None
            self._connection.process_data_events(time_limit=seconds)
        except (pe.AMQPError, OSError):
            self._connection = None
            time.sleep(0.2)
            self._connect()

    def events(self) -> list[CloudEvent[Any]]:
        """Every message collected so far that decodes as an event (the rest stay in `messages`)."""
        found = []
        for _, body in self.messages:
            with contextlib.suppress(ValueError):
                found.append(decode(body))
        return found

    def wait(self, condition: Callable[[EventTap], bool], *, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what} "
                                     f"({len(self.messages)} messages collected)")
            self.poll(0.1)

    def close(self) -> None:
        with contextlib.suppress(pe.AMQPError, OSError):
            if self._connection is None or not self._connection.is_open:
                self._connect()
            self._channel.queue_delete(self.queue)
            assert self._connection is not None
            self._connection.close()


@contextlib.contextmanager
def event_tap(broker_url: str, **kwargs: Any) -> Iterator[EventTap]:
    tap = EventTap(broker_url, **kwargs)
    try:
        yield tap
    finally:
        tap.close()


def client_connections(vhost: str) -> list[dict[str, Any]]:
    """The vhost's client connections (management API), except the test's own."""
    with management() as api:
        found = api.get(f"/vhosts/{quote(vhost, safe='')}/connections").json()
    return [c for c in found
            if not str(c.get("client_properties", {}).get("connection_name", "")).startswith(TEST_CONNECTION_PREFIX)]


def close_connections(vhost: str, *, wait_until: Callable[[list[dict[str, Any]]], bool] | None = None,
                      timeout: float = 30.0, reason: str = "closed by a modelbus fault test",
                      ) -> list[dict[str, Any]]:
    """Force-close every client connection of `vhost` but the test's own.

    The management API lists a new connection only after its next statistics tick (seconds), so
    `wait_until(listed)` can hold the cut until the connections that matter are visible.

    Returns:
        the closed connections, as the management API lists them (see `label`).
    """
    if wait_until is not None:
        wait_for(lambda: wait_until(client_connections(vhost)), timeout=timeout, interval=0.25,
                 what="the connections to cut to be listed by the management API")
    closed = []
    with management() as api:
        for connection in client_connections(vhost):
            reply = api.delete(f"/connections/{quote(connection['name'], safe='')}", headers={"X-Reason": reason})
            if reply.status_code in (204, 404):
                closed.append(connection)
    return closed


def label(connection: dict[str, Any]) -> str:
    """A connection's client-given name (`modelbus-invoke`), or its peer address."""
    return str(connection.get("client_properties", {}).get("connection_name") or connection["name"])


def read_all(channel: Any, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    """Drain a queue with basic_get (dead-letter queues are small and inspected once)."""
    found = []
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return found
        found.append((props, body))


def result_request_ids(events: Iterable[CloudEvent[Any]]) -> dict[str, list[str]]:
    """request id -> ids of the invoke results that answered it (two entries mean a duplicate)."""
    answers: dict[str, list[str]] = {}
    for event in events:
        request_id = getattr(event.data, "request_id", None)
        if request_id is not None:
            answers.setdefault(request_id, []).append(event.id)
    return answers
