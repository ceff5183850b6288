"""What the benchmarks share: a private vhost, child processes, free ports, the v2 workload and client (a)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

REPO = Path(__file__).resolve().parent.parent
BROKER_HOST = os.environ.get("MODELBUS_BENCH_BROKER_HOST", "127.0.0.1")
MANAGEMENT = f"http://{BROKER_HOST}:15672/api"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(args: list[str], *, env: dict[str, str] | None = None,
            cwd: Path = REPO) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (with this checkout importable) for the duration of the block."""
    child_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.Popen(args, env=child_env, cwd=str(cwd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def bench_vhost(prefix: str = "modelbus-bench") -> Iterator[str]:
    """A private vhost (created and deleted through the management API); yields its AMQP URL."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=MANAGEMENT, auth=("guest", "guest"), timeout=10) as api:
        api.put(f"/vhosts/{quote(name, safe='')}").raise_for_status()
        api.put(f"/permissions/{quote(name, safe='')}/guest",
                json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    try:
        yield f"amqp://guest:guest@{BROKER_HOST}:5672/{quote(name, safe='')}"
    finally:
        with httpx.Client(base_url=MANAGEMENT, auth=("guest", "guest"), timeout=10) as api:
            api.delete(f"/vhosts/{quote(name, safe='')}")


def wait_until(check: Callable[[], bool], what: str, timeout: float = 180.0) -> None:
    """Poll `check` (HTTP errors count as not yet) until it holds; RuntimeError after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not happen within {timeout:g}s")


def wait_http(url: str, *, proc: subprocess.Popen[bytes] | None = None, timeout: float = 180.0) -> None:
    """Wait until GET `url` answers 200; fail at once if `proc`, the process serving it, has exited."""

    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        return httpx.get(url, timeout=1).status_code == 200

    wait_until(up, f"{url} answering", timeout)


def worker_env(url: str, state: Path) -> dict[str, str]:
    """Environment of an invoke worker process on the broker `url` with its state under `state`."""
    return {"MODELBUS_BROKER__URL": url, "MODELBUS_LOG_LEVEL": "WARNING", "MODELBUS_STATE_DIR": str(state)}


def on_cores(command: list[str], cores: set[int] | None) -> list[str]:
    """`command` started with its CPU affinity set (inherited by every thread it starts)."""
    if cores is None:
        return command
    return ["taskset", "-c", ",".join(map(str, sorted(cores))), *command]


@contextmanager
def invoke_workers(url: str, state: Path, count: int = 1, cores: set[int] | None = None) -> Iterator[None]:
    """`count` invoke worker processes consuming the invoke queue for the block."""
    with ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(process(on_cores([sys.executable, "-m", "workers.invoke"], cores),
                                        env=worker_env(url, state)))
        wait_until(lambda: consumers(url, "modelbus.invoke") >= count, f"{count} invoke worker(s) consuming", 60)
        yield


def consumers(url: str, queue: str) -> int:
    """Consumers of `queue` in the vhost of the AMQP `url` (0 when the queue does not exist yet)."""
    vhost = url.rsplit("/", 1)[1]
    response = httpx.get(f"{MANAGEMENT}/queues/{vhost}/{quote(queue, safe='')}", auth=("guest", "guest"), timeout=5)
    return int(response.json().get("consumers", 0)) if response.status_code == 200 else 0


def texts(n: int) -> list[str]:
    words = ["good", "bad", "great", "awful", "fine", "terrible", "lovely", "boring"]
    return [f"review {i}: the film was {words[i % 8]} and the popcorn {words[(i * 7) % 8]}" for i in range(n)]


def v2_body(items: list[str]) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": [len(items)], "datatype": "BYTES", "data": items}]}


async def direct_batched(url: str, items: list[str], *, batch: int = 32, in_flight: int = 2) -> float:
    """(a) the optimal direct client: seconds to classify `items` with v2 calls of `batch` texts."""
    limit = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(timeout=120) as client:
        async def call(chunk: list[str]) -> None:
            async with limit:
                (await client.post(url, json=v2_body(chunk))).raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(call(items[i:i + batch]) for i in range(0, len(items), batch)))
        return time.perf_counter() - start
