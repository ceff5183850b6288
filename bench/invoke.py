"""Benchmark of the invoke path: single-text classification requests through the broker.

Compares, on the same MiniLM classifier served by `python -m serving`:

* (a) a direct HTTP client sending optimally batched v2 calls (32 texts per call, 2 in flight);
* the modelbus pipeline: N single-text InvokeRequested events -> invoke worker (micro-batching)
  -> model server -> InvokeCompleted on a reply queue;
* (b) the naive design: one Celery task per request, each doing one HTTP call (defined here).

Then the pipeline's own ceiling against an instant endpoint (a trivial async server returning a
canned v2 response) and the latency it adds at low load (sequential requests, through the broker
vs. straight to the same endpoint). Prints a table with ratios and the targets.

Usage: python bench/invoke.py [--n 2000] [--naive-n 300] [--instant-n 10000] [--latency-n 300]
Needs RabbitMQ with the management API (a private vhost is created and deleted).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import httpx
import orjson
from celery import Celery

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import MANAGEMENT, bench_vhost, direct_batched, free_port, process, texts, v2_body  # noqa: E402
from schemas.envelope import amqp_properties, encode, new_event  # noqa: E402
from schemas.events import InvokeRequested  # noqa: E402
from schemas.topology import EXCHANGE  # noqa: E402

NAIVE_QUEUE = "bench.naive"

# ------------------------------------------------------------------------------ (b) the naive design

naive_app = Celery("bench-naive")
naive_app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    result_backend="rpc://",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=NAIVE_QUEUE,
    broker_connection_retry_on_startup=True,
)


@naive_app.task(name="bench.naive_invoke")
def naive_invoke(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request, one task, one HTTP call: what the invoke worker is designed not to be."""
    response = httpx.post(url, json=body, timeout=60)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


# ------------------------------------------------------------------------------ instant endpoint


async def instant_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A v2 endpoint that answers at once: one INT64 per input row."""
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"ready": true}'})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    rows = len(orjson.loads(body)["inputs"][0]["data"])
    answer = orjson.dumps({"model_name": "instant", "model_version": None, "id": "x", "parameters": None,
                           "outputs": [{"name": "output-0", "shape": [rows], "datatype": "INT64",
                                        "parameters": None, "data": [1] * rows}]})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": answer})


# ------------------------------------------------------------------------------ processes


def arun(coro: Any) -> Any:
    """Run a coroutine on uvloop when installed, like the worker does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)





def wait_http(url: str, timeout: float = 180.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")






def wait_consumer(url: str, queue: str, timeout: float = 60.0) -> None:
    """Block until `queue` has a consumer (the worker is up)."""
    vhost = url.rsplit("/", 1)[1]
    end = time.monotonic() + timeout
    with httpx.Client(base_url=MANAGEMENT, auth=("guest", "guest"), timeout=10) as api:
        while time.monotonic() < end:
            response = api.get(f"/queues/{vhost}/{quote(queue, safe='')}")
            if response.status_code == 200 and response.json().get("consumers", 0) > 0:
                return
            time.sleep(0.2)
    raise RuntimeError(f"no consumer on {queue}")








# ------------------------------------------------------------------------------ measurements





class BrokerClient:
    """Publishes prepared InvokeRequested events (pipelined confirms) and collects replies."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.replies: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._expected = 0
        self._all = asyncio.Event()

    async def __aenter__(self) -> BrokerClient:
        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await self.channel.get_exchange(EXCHANGE)
        self.queue = await self.channel.declare_queue("", exclusive=True, auto_delete=True)
        await self.queue.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = orjson.loads(message.body)
        request_id = event["data"]["request_id"]
        self.replies[request_id] = event
        waiter = self._waiters.pop(request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)
        if len(self.replies) >= self._expected:
            self._all.set()

    def prepare(self, target: str, model_name: str, bodies: list[dict[str, Any]]) -> list[tuple[str, aio_pika.Message]]:
        out = []
        for body in bodies:
            event = new_event(InvokeRequested(url=target, model_name=model_name, body=body,  # type: ignore[arg-type]
                                              reply_to=self.queue.name), source="/bench")
            props = amqp_properties(event)
            out.append((event.id, aio_pika.Message(
                encode(event), message_id=props["message_id"], correlation_id=props["correlation_id"],
                type=props["type"], content_type=props["content_type"], delivery_mode=2)))
        return out

    async def run(self, messages: list[tuple[str, aio_pika.Message]], *, window: int = 1000,
                  timeout: float = 600) -> float:
        """Seconds from the first publish to the last reply."""
        if not messages:
            return 0.0
        self.replies.clear()
        self._expected = len(messages)
        self._all = asyncio.Event()
        limit = asyncio.Semaphore(window)

        async def publish(message: aio_pika.Message) -> None:
            async with limit:
                await self.exchange.publish(message, routing_key=InvokeRequested.routing_key)

        start = time.perf_counter()
        await asyncio.gather(*(publish(m) for _, m in messages))
        await asyncio.wait_for(self._all.wait(), timeout)
        return time.perf_counter() - start

    async def one(self, request_id: str, message: aio_pika.Message) -> float:
        """Round trip of one request at an otherwise idle pipeline, seconds."""
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        self._expected = 10**9
        start = time.perf_counter()
        publish = asyncio.ensure_future(self.exchange.publish(message, routing_key=InvokeRequested.routing_key))
        await asyncio.wait_for(waiter, 30)
        elapsed = time.perf_counter() - start
        await publish
        return elapsed

    def summary(self) -> tuple[int, float]:
        failed = sum(1 for e in self.replies.values() if e["type"].endswith("invoke.failed"))
        sizes = [e["data"].get("batch_size", 1) for e in self.replies.values() if "batch_size" in e["data"]]
        return failed, statistics.mean(sizes) if sizes else 0.0


async def through_broker(url: str, target: str, model: str, items: list[str], warmup: int = 64) -> dict[str, Any]:
    async with BrokerClient(url) as client:
        await client.run(client.prepare(target, model, [v2_body([t]) for t in items[:warmup]]))
        messages = client.prepare(target, model, [v2_body([t]) for t in items])
        seconds = await client.run(messages)
        failed, mean_batch = client.summary()
        return {"seconds": seconds, "failed": failed, "mean_batch": mean_batch}


async def latencies(url: str, target: str, model: str, n: int) -> dict[str, float]:
    """p50/p90 round trip through the broker vs straight to `target`, one request at a time."""
    body = v2_body(["a single short text"])
    direct = []
    async with httpx.AsyncClient(timeout=30) as http:
        endpoint = f"{target}/v2/models/{model}/infer"
        for _ in range(20):
            await http.post(endpoint, json=body)
        for _ in range(n):
            start = time.perf_counter()
            (await http.post(endpoint, json=body)).raise_for_status()
            direct.append(time.perf_counter() - start)
    via = []
    async with BrokerClient(url) as client:
        for i, (request_id, message) in enumerate(client.prepare(target, model, [body] * (n + 20))):
            elapsed = await client.one(request_id, message)
            if i >= 20:
                via.append(elapsed)
            await asyncio.sleep(0.005)  # low load: requests do not overlap
    q = statistics.quantiles
    return {"direct_p50": statistics.median(direct) * 1000, "broker_p50": statistics.median(via) * 1000,
            "direct_p90": q(direct, n=10)[-1] * 1000, "broker_p90": q(via, n=10)[-1] * 1000}


def naive(url: str, target: str, items: list[str]) -> float:
    naive_app.conf.broker_url = url
    warm = naive_app.send_task("bench.naive_invoke", args=[target, v2_body(["warm up"])], queue=NAIVE_QUEUE)
    warm.get(timeout=120)
    start = time.perf_counter()
    results = [naive_app.send_task("bench.naive_invoke", args=[target, v2_body([t])], queue=NAIVE_QUEUE)
               for t in items]
    for result in results:
        result.get(timeout=600)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------ main


def worker_env(url: str, state: Path) -> dict[str, str]:
    return {"MODELBUS_BROKER__URL": url, "MODELBUS_LOG_LEVEL": "WARNING", "MODELBUS_STATE_DIR": str(state)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="requests for the model-server comparisons")
    parser.add_argument("--naive-n", type=int, default=300, help="requests for the naive Celery design")
    parser.add_argument("--instant-n", type=int, default=10000, help="requests against the instant endpoint")
    parser.add_argument("--latency-n", type=int, default=300, help="sequential requests for the latency probe")
    parser.add_argument("--serve-instant", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_instant:
        import uvicorn

        uvicorn.run(instant_app, host="127.0.0.1", port=args.serve_instant, log_level="warning",
                    access_log=False, lifespan="off")
        return

    from producers.publisher import Publisher
    from producers.topology import declare_topology
    from schemas.settings import BrokerSettings
    from tests.models import build_minilm_classifier

    work = Path(tempfile.mkdtemp(prefix="bench-invoke-"))
    model_dir = build_minilm_classifier(work / "minilm-classifier")
    model_port, instant_port = free_port(), free_port()
    model_url, instant_url = f"http://127.0.0.1:{model_port}", f"http://127.0.0.1:{instant_port}"
    rows: list[tuple[str, int, float, str]] = []
    with bench_vhost() as url:
        with Publisher(BrokerSettings(url=url)) as publisher:
            declare_topology(publisher.channel)
        with (
            process([sys.executable, "-m", "serving", "--model_name", "cls", "--model_dir", str(model_dir),
                     "--http_port", str(model_port), "--host", "127.0.0.1"]) as server,
            process([sys.executable, str(Path(__file__).resolve()), "--serve-instant", str(instant_port)]) as inst,
        ):
            wait_http(f"{model_url}/v2/health/ready", proc=server)
            wait_http(f"{instant_url}/", proc=inst)
            items = texts(args.n)
            endpoint = f"{model_url}/v2/models/cls/infer"
            arun(direct_batched(endpoint, items[:256]))  # warm up the model
            direct_s = arun(direct_batched(endpoint, items))
            rows.append(("(a) direct client, v2 batches of 32, 2 in flight", args.n, direct_s, ""))

            with process([sys.executable, "-m", "workers.invoke"], env=worker_env(url, work)):
                wait_consumer(url, "modelbus.invoke")
                piped = arun(through_broker(url, model_url, "cls", items))
                rows.append(("modelbus pipeline -> MiniLM server", args.n, piped["seconds"],
                             f"mean batch {piped['mean_batch']:.1f}, failed {piped['failed']}"))
                instant = arun(through_broker(url, instant_url, "instant", texts(args.instant_n)))
                rows.append(("modelbus pipeline -> instant endpoint (ceiling)", args.instant_n, instant["seconds"],
                             f"mean batch {instant['mean_batch']:.1f}, failed {instant['failed']}"))
                lat = arun(latencies(url, instant_url, "instant", args.latency_n))

            with process([sys.executable, "-m", "celery", "-A", "invoke:naive_app", "worker", "--pool=prefork",
                          "--concurrency=2", f"--queues={NAIVE_QUEUE}", "--loglevel=WARNING", "--without-gossip",
                          "--without-mingle", "--without-heartbeat"], env={"BENCH_BROKER_URL": url},
                         cwd=REPO / "bench"):
                naive_s = naive(url, endpoint, texts(args.naive_n))
            rows.append(("(b) naive: one Celery task per request", args.naive_n, naive_s, "prefork, concurrency 2"))

    report(rows, lat)


def report(rows: list[tuple[str, int, float, str]], lat: dict[str, float]) -> None:
    rate = {name: n / s for name, n, s, _ in rows}
    a = next(v for k, v in rate.items() if k.startswith("(a)"))
    b = next(v for k, v in rate.items() if k.startswith("(b)"))
    pipe = next(v for k, v in rate.items() if k.startswith("modelbus pipeline -> MiniLM"))
    ceiling = next(v for k, v in rate.items() if "ceiling" in k)
    print(f"\ninvoke benchmark ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)\n")
    print(f"| {'scenario':<50} | {'requests':>8} | {'seconds':>8} | {'req/s':>8} | notes")
    print(f"|{'-' * 52}|{'-' * 10}|{'-' * 10}|{'-' * 10}|------")
    for name, n, seconds, notes in rows:
        print(f"| {name:<50} | {n:>8} | {seconds:>8.2f} | {n / seconds:>8.1f} | {notes}")
    added = lat["broker_p50"] - lat["direct_p50"]
    print()
    print(f"latency at low load: direct p50 {lat['direct_p50']:.2f} ms (p90 {lat['direct_p90']:.2f}), "
          f"through the broker p50 {lat['broker_p50']:.2f} ms (p90 {lat['broker_p90']:.2f})")
    print()
    print("| target                                  | measured   | goal      | met")
    print("|-----------------------------------------|------------|-----------|----")
    checks = [
        ("pipeline vs (a) direct batched", pipe / a, "x", 0.9),
        ("pipeline vs (b) naive Celery", pipe / b, "x", 8.0),
        ("pipeline ceiling (instant endpoint)", ceiling, " req/s", 1500.0),
    ]
    for name, value, unit, goal in checks:
        met = "yes" if value >= goal else "no"
        print(f"| {name:<39} | {value:>8.2f}{unit:<2} | >= {goal:g}{unit.strip():<4} | {met}")
    print(f"| {'p50 added latency at low load':<39} | {added:>7.2f} ms | <= 5 ms    | {'yes' if added <= 5 else 'no'}")


if __name__ == "__main__":
    main()
