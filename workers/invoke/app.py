"""Composition root of the invoke worker: wire broker, directory, HTTP pool and service; run the loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from schemas.settings import Settings
from workers.health import asyncio_component
from workers.invoke.amqp import Broker
from workers.invoke.service import InvokeService
from workers.invoke.targets import ServiceDirectory, registry_fallback
from workers.invoke.upstream import Upstream

log = logging.getLogger(__name__)

#: Longest a stopping worker waits for in-flight requests to be answered, seconds.
DRAIN_TIMEOUT_S = 30.0


async def serve(
    settings: Settings, *, stop: asyncio.Event, on_ready: Callable[[InvokeService], None] | None = None
) -> None:
    """Run the invoke worker until `stop` is set, then drain: answer what was taken, close cleanly.

    Args:
        settings: broker, invoke tuning and state directory (for the service registry fallback).
        stop: set it to shut down.
        on_ready: called with the service once consuming has started.

    Raises:
        BrokerError: the broker could not be reached at start-up.
    """
    broker = Broker(settings)
    upstream = Upstream(settings.invoke)
    service = InvokeService(settings, broker=broker, directory=ServiceDirectory(registry_fallback(settings.state_dir)),
                            upstream=upstream)
    await broker.connect()
    try:
        await broker.consume_registry(service.on_registry)
        await broker.consume_requests(service.on_request)
        log.info("invoke worker consuming", extra={"prefetch": settings.invoke.prefetch,
                                                   "max_batch_size": settings.invoke.max_batch_size})
        if on_ready is not None:
            on_ready(service)
        async with asyncio_component("invoke-consumer", connected=lambda: broker.connected):  # /readyz, /healthz
            await stop.wait()
        await broker.stop_consuming()
        await service.drain(DRAIN_TIMEOUT_S)
    finally:
        await upstream.aclose()
        await broker.close()
        log.info("invoke worker stopped")


def run(settings: Settings) -> None:
    """Run the invoke worker in the foreground until SIGINT or SIGTERM (the `modelbus worker invoke` entry).

    Logging and the metrics endpoint are the caller's to set up (`modelbus worker invoke` and
    `python -m workers.invoke` do).
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop=stop)

    try:
        import uvloop  # the faster event loop, when installed (it is a dependency on Linux)
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
