"""Benchmark of the invoke path: single-text classification requests through the broker.

Compares, on the same MiniLM classifier served by `python -m serving`:

* (a) a direct HTTP client sending optimally batched v2 calls (32 texts per call, 2 in flight);
* the modelbus pipeline: N single-text InvokeRequested events -> invoke worker (micro-batching)
  -> model server -> InvokeCompleted on a reply queue;
* (b) the naive design: one Celery task per request, each doing one HTTP call (defined here).

These three run twice. First with the model server on its own cores and RabbitMQ, the workers
and the load generator pinned to the others, as in a deployment where the model runs on its own
node: this is the comparison the targets are read from. Then with every process free on every
core (informational: on a small machine the pipeline's own CPU is taken from the model server).

Then the pipeline's ceiling against an instant endpoint (a trivial async server returning a
canned v2 response), with one invoke worker process and with `--workers` of them, and the latency
it adds at low load (sequential requests, through the broker vs. straight to the same endpoint).
Prints a table with ratios and the targets.

Usage: python bench/invoke.py [--n 2000] [--naive-n 300] [--instant-n 10000] [--latency-n 300] [--workers 2]
Needs RabbitMQ with the management API (a private vhost is created and deleted); pinning RabbitMQ
needs the right to change its CPU affinity (root, or the same user), else that part runs unpinned.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import aiormq
import aiormq.abc
import httpx
import orjson
from celery import Celery

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    bench_vhost,
    direct_batched,
    free_port,
    invoke_workers,
    on_cores,
    process,
    texts,
    v2_body,
    wait_http,
)
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


# ------------------------------------------------------------------------------ measurements


class Prepared(NamedTuple):
    """One InvokeRequested, encoded with its AMQP properties before the clock starts."""

    request_id: str
    body: bytes
    properties: aiormq.spec.Basic.Properties


class BrokerClient:
    """The load generator: publishes prepared InvokeRequested events (pipelined confirms), collects replies.

    Written on aiormq (the AMQP layer under aio-pika) with the frames' properties built once per
    event before timing starts, so the generator spends as little as it can of the two cores the
    broker and the worker also run on. It still publishes persistent messages with confirms, as an
    upstream service does.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.replies: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._expected = 0
        self._all = asyncio.Event()

    async def __aenter__(self) -> BrokerClient:
        self.connection = await aiormq.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        declared = await self.channel.queue_declare("", exclusive=True, auto_delete=True)
        self.reply_queue = str(declared.queue)
        await self.channel.basic_consume(self.reply_queue, self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        event = orjson.loads(message.body)
        request_id = event["data"]["request_id"]
        self.replies[request_id] = event
        waiter = self._waiters.pop(request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)
        if len(self.replies) >= self._expected:
            self._all.set()

    def prepare(self, target: str, model_name: str, bodies: list[dict[str, Any]]) -> list[Prepared]:
        out = []
        for body in bodies:
            event = new_event(InvokeRequested(url=target, model_name=model_name, body=body,
                                              reply_to=self.reply_queue), source="/bench")
            props = amqp_properties(event)
            out.append(Prepared(event.id, encode(event), aiormq.spec.Basic.Properties(
                message_id=props["message_id"], correlation_id=props["correlation_id"], message_type=props["type"],
                content_type=props["content_type"], delivery_mode=2)))
        return out

    async def _publish(self, message: Prepared) -> None:
        confirm = await self.channel.basic_publish(message.body, exchange=EXCHANGE,
                                                   routing_key=InvokeRequested.routing_key,
                                                   properties=message.properties)
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            raise RuntimeError(f"the broker did not confirm request {message.request_id}: {confirm!r}")

    async def run(self, messages: list[Prepared], *, window: int = 1000, timeout: float = 600) -> float:
        """Seconds from the first publish to the last reply."""
        if not messages:
            return 0.0
        self.replies.clear()
        self._expected = len(messages)
        self._all = asyncio.Event()
        limit = asyncio.Semaphore(window)

        async def publish(message: Prepared) -> None:
            async with limit:
                await self._publish(message)

        start = time.perf_counter()
        await asyncio.gather(*(publish(m) for m in messages))
        await asyncio.wait_for(self._all.wait(), timeout)
        return time.perf_counter() - start

    async def one(self, message: Prepared) -> float:
        """Round trip of one request at an otherwise idle pipeline, seconds."""
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[message.request_id] = waiter
        self._expected = 10**9
        start = time.perf_counter()
        publish = asyncio.ensure_future(self._publish(message))
        await asyncio.wait_for(waiter, 30)
        elapsed = time.perf_counter() - start
        await publish
        return elapsed

    def summary(self) -> tuple[int, float]:
        failed = sum(1 for e in self.replies.values() if e["type"].endswith("invoke.failed"))
        sizes = [e["data"]["batch_size"] for e in self.replies.values() if "batch_size" in e["data"]]
        # Requests per upstream call: a call of k requests answers k of them, each counting 1/k.
        return failed, len(sizes) / sum(1 / size for size in sizes) if sizes else 0.0


async def through_broker(url: str, target: str, model: str, items: list[str], warmup: int = 64) -> dict[str, Any]:
    async with BrokerClient(url) as client:
        await client.run(client.prepare(target, model, [v2_body([t]) for t in items[:warmup]]))
        messages = client.prepare(target, model, [v2_body([t]) for t in items])
        seconds = await client.run(messages)
        failed, per_call = client.summary()
        return {"seconds": seconds, "failed": failed, "per_call": per_call}


async def latencies(url: str, target: str, model: str, n: int) -> dict[str, float]:
    """p50/p90 round trip through the broker vs straight to `target`, one request at a time."""
    body = v2_body(["a single short text"])
    direct = []
    content = orjson.dumps(body)
    # The same HTTP client as the worker's, so the difference is what the broker path adds.
    async with aiohttp.ClientSession(headers={"content-type": "application/json"}) as http:
        endpoint = f"{target}/v2/models/{model}/infer"
        for i in range(n + 20):
            start = time.perf_counter()
            async with http.post(endpoint, data=content) as response:
                response.raise_for_status()
                await response.read()
            if i >= 20:
                direct.append(time.perf_counter() - start)
    via = []
    async with BrokerClient(url) as client:
        for i, message in enumerate(client.prepare(target, model, [body] * (n + 20))):
            elapsed = await client.one(message)
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


def core_split() -> tuple[set[int], set[int]] | None:
    """(pipeline cores, model cores): the model server gets the upper half of the usable CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def broker_pids() -> list[int]:
    """The local RabbitMQ node's processes (empty when the broker runs elsewhere)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@contextmanager
def pinned(pids: list[int], cores: set[int]) -> Iterator[bool]:
    """Every thread of `pids` on `cores` for the block, their own masks restored after.

    Yields whether every process could be pinned.
    """
    saved: dict[int, set[int]] = {}
    complete = True
    for pid in pids:
        try:
            threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            complete = False
            continue
        for tid in threads:
            try:
                mask = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, cores)
            except OSError:  # gone meanwhile, or not ours to change
                complete = False
                continue
            saved[tid] = mask
    try:
        yield complete
    finally:
        for tid, mask in saved.items():
            with suppress(OSError):
                os.sched_setaffinity(tid, mask)


@dataclass
class Row:
    scenario: str
    requests: int
    seconds: float
    notes: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass
class Comparison:
    """(a), the pipeline and (b) against one placement of the model server."""

    direct: Row
    pipeline: Row
    naive: Row

    def rows(self) -> list[Row]:
        return [self.direct, self.pipeline, self.naive]


def compare(url: str, work: Path, model_dir: Path, args: argparse.Namespace, *,
            split: tuple[set[int], set[int]] | None, label: str) -> Comparison:
    """(a), the pipeline and (b) against a MiniLM server, on separate cores when `split` is given."""
    pipeline_cores, model_cores = split if split is not None else (None, None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    endpoint = f"{base}/v2/models/cls/infer"
    server_cmd = [sys.executable, "-m", "serving", "--model_name", "cls", "--model_dir", str(model_dir),
                  "--http_port", str(port), "--host", "127.0.0.1"]
    items = texts(args.n)
    with ExitStack() as stack:
        server = stack.enter_context(process(on_cores(server_cmd, model_cores)))
        wait_http(f"{base}/v2/health/ready", proc=server)
        if pipeline_cores is not None and not stack.enter_context(
                pinned([os.getpid(), *broker_pids()], pipeline_cores)):
            print("note: RabbitMQ could not be pinned; it shares the model server's cores", file=sys.stderr)
        arun(direct_batched(endpoint, items[:256]))  # warm up the model
        direct = Row(f"(a) direct client, v2 batches of 32, 2 in flight{label}", args.n,
                     arun(direct_batched(endpoint, items)))
        with invoke_workers(url, work, 1, pipeline_cores):
            piped = arun(through_broker(url, base, "cls", items))
        pipeline = Row(f"modelbus pipeline -> MiniLM server{label}", args.n, piped["seconds"],
                       f"{piped['per_call']:.1f} requests per call, failed {piped['failed']}")
        celery = [sys.executable, "-m", "celery", "-A", "invoke:naive_app", "worker", "--pool=prefork",
                  "--concurrency=2", f"--queues={NAIVE_QUEUE}", "--loglevel=WARNING", "--without-gossip",
                  "--without-mingle", "--without-heartbeat"]
        with process(on_cores(celery, pipeline_cores), env={"BENCH_BROKER_URL": url}, cwd=REPO / "bench"):
            naive_s = naive(url, endpoint, texts(args.naive_n))
        naive_row = Row(f"(b) naive: one Celery task per request{label}", args.naive_n, naive_s,
                        "prefork, concurrency 2")
    return Comparison(direct, pipeline, naive_row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="requests for the model-server comparisons")
    parser.add_argument("--naive-n", type=int, default=300, help="requests for the naive Celery design")
    parser.add_argument("--instant-n", type=int, default=10000, help="requests against the instant endpoint")
    parser.add_argument("--latency-n", type=int, default=300, help="sequential requests for the latency probe")
    parser.add_argument("--workers", type=int, default=2, help="invoke worker processes for the second ceiling run")
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
    split = core_split()
    with bench_vhost() as url:
        with Publisher(BrokerSettings(url=url)) as publisher:
            declare_topology(publisher.channel)
        isolated = compare(url, work, model_dir, args, split=split, label="" if split is None else " [own cores]")
        shared = compare(url, work, model_dir, args, split=None, label=" [shared]") if split is not None else None

        instant_port = free_port()
        instant_url = f"http://127.0.0.1:{instant_port}"
        ceiling: list[Row] = []
        with process([sys.executable, str(Path(__file__).resolve()), "--serve-instant", str(instant_port)]) as inst:
            wait_http(f"{instant_url}/", proc=inst)
            for count in sorted({1, args.workers}):
                with invoke_workers(url, work, count):
                    run = arun(through_broker(url, instant_url, "instant", texts(args.instant_n)))
                    ceiling.append(Row(f"pipeline -> instant endpoint, {count} worker process{'es' * (count > 1)}",
                                       args.instant_n, run["seconds"],
                                       f"{run['per_call']:.1f} requests per call, failed {run['failed']}"))
                    if count == 1:
                        lat = arun(latencies(url, instant_url, "instant", args.latency_n))

    report(isolated, shared, ceiling, lat)


def report(isolated: Comparison, shared: Comparison | None, ceiling: list[Row], lat: dict[str, float]) -> None:
    rows = [*isolated.rows(), *(shared.rows() if shared else []), *ceiling]
    print(f"\ninvoke benchmark ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)\n")
    print(f"| {'scenario':<62} | {'requests':>8} | {'seconds':>8} | {'req/s':>8} | notes")
    print(f"|{'-' * 64}|{'-' * 10}|{'-' * 10}|{'-' * 10}|------")
    for row in rows:
        print(f"| {row.scenario:<62} | {row.requests:>8} | {row.seconds:>8.2f} | {row.rate:>8.1f} | {row.notes}")
    if shared is not None:
        print(f"\nshared cores (informational): pipeline vs (a) {shared.pipeline.rate / shared.direct.rate:.2f}x, "
              f"vs (b) {shared.pipeline.rate / shared.naive.rate:.2f}x")
    print(f"\nlatency at low load: direct p50 {lat['direct_p50']:.2f} ms (p90 {lat['direct_p90']:.2f}), "
          f"through the broker p50 {lat['broker_p50']:.2f} ms (p90 {lat['broker_p90']:.2f})\n")
    best = max(ceiling, key=lambda row: row.rate)
    checks = [
        ("pipeline vs (a) direct batched", isolated.pipeline.rate / isolated.direct.rate, "x", 0.9, True),
        ("pipeline vs (b) naive Celery", isolated.pipeline.rate / isolated.naive.rate, "x", 8.0, True),
        ("pipeline ceiling (instant endpoint)", best.rate, " req/s", 1500.0, True),
        ("p50 added latency at low load", lat["broker_p50"] - lat["direct_p50"], " ms", 5.0, False),
    ]
    print(f"| {'target':<39} | {'measured':>14} | {'goal':<13} | met")
    print(f"|{'-' * 41}|{'-' * 16}|{'-' * 15}|----")
    for name, value, unit, goal, at_least in checks:
        met = value >= goal if at_least else value <= goal
        goal_text = f"{'>=' if at_least else '<='} {goal:g}{unit}"
        print(f"| {name:<39} | {f'{value:.2f}{unit}':>14} | {goal_text:<13} | {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()
