"""Fixtures of the invoke tests: the worker running in-process, a scripted upstream, a client."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from producers.client import ModelBus
from schemas.events import ServiceReady
from schemas.settings import InvokeSettings, Settings
from schemas.topology import INVOKE_QUEUE
from tests.conftest import purge
from tests.invoke.upstream_app import Calls, ready_event_data, running_upstream
from workers.invoke import InvokeService, serve


class WorkerHandle:
    """An invoke worker running `serve()` in a thread with its own event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: InvokeService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="invoke-worker", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(service: InvokeService) -> None:
                self.service = service
                self._ready.set()

            await serve(self.settings, stop=self._stop, on_ready=ready)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def start(self) -> WorkerHandle:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"invoke worker did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=40)
        assert not self._thread.is_alive(), "invoke worker did not stop"

    def knows(self, service: str, timeout: float = 10.0) -> None:
        """Wait until the worker's service directory has `service` (it arrives as an event)."""
        end = time.monotonic() + timeout
        while self.service is None or self.service.directory.get(service) is None:
            if time.monotonic() > end:
                raise AssertionError(f"the worker never learnt about {service!r}")
            time.sleep(0.01)


@pytest.fixture
def invoke_settings(settings: Settings, topology: list[str], channel: pika.adapters.blocking_connection.BlockingChannel,
                    ) -> Settings:
    """Settings with fast retries for tests, on a clean invoke queue."""
    purge(channel, INVOKE_QUEUE.name, INVOKE_QUEUE.dead_letter_queue)
    return settings.model_copy(update={"invoke": InvokeSettings(
        max_attempts=3, backoff_s=0.02, backoff_max_s=0.1, timeout_s=30.0, breaker_failures=50,
    )})


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerHandle]]:
    """Start invoke workers (settings may be overridden); every one is stopped at the end."""
    started: list[WorkerHandle] = []

    def start(settings: Settings) -> WorkerHandle:
        handle = WorkerHandle(settings).start()
        started.append(handle)
        return handle

    yield start
    for handle in reversed(started):
        handle.stop()


@pytest.fixture
def worker(invoke_settings: Settings, start_worker: Callable[..., WorkerHandle]) -> WorkerHandle:
    return start_worker(invoke_settings)


@pytest.fixture
def upstream() -> Iterator[tuple[str, Calls]]:
    with running_upstream() as found:
        yield found


@pytest.fixture
def bus(invoke_settings: Settings) -> Iterator[ModelBus]:
    with ModelBus(invoke_settings, source="/tests/invoke") as client:
        yield client


@pytest.fixture
def announce(bus: ModelBus) -> Callable[..., None]:
    """Publish a ServiceReady for a server and wait until the given worker knows it."""

    def announce(worker: WorkerHandle, service: str, base_url: str, **kwargs: Any) -> None:
        bus.publish(ServiceReady(**ready_event_data(service, base_url, **kwargs)))
        worker.knows(service)

    return announce
