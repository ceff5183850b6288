"""Benchmark of batch jobs: end-to-end throughput of `modelbus batch` beside a direct, optimally batched client.

On the same classifier served by `python -m serving`, for N single-text requests:

* direct: an HTTP client sending v2 calls of 32 texts straight to the server, 2 calls in flight
  (the best a hand-written client does, with no broker, no durability, no per-request results);
* batch: a JSONL of N OpenAI-style batch lines submitted with `submit_batch(..., wait=True)`:
  validation, store, paced publishing, the invoke worker (micro-batching), the per-batch results
  queue, collection into fsynced output files; timed from submit to the batch being `completed`,
  then the export of the output file. Run with the default in-flight bound and unbounded.

Usage: python bench/batch.py [--n 2000] [--model minilm|tiny] [--repeat 3]
Needs RabbitMQ with the management API (a private vhost is created and deleted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    bench_vhost,
    direct_batched,
    free_port,
    invoke_workers,
    process,
    texts,
    v2_body,
    wait_http,
)
from producers.batch import BatchState, submit_batch  # noqa: E402
from schemas.settings import BatchSettings, BrokerSettings, Settings  # noqa: E402

SERVICE = "bench-classifier"
DIRECT = "direct client: v2 batches of 32, 2 in flight"
BOUNDS = (("batch job, max_in_flight 1000 (default)", 1000), ("batch job, unbounded in flight", 0))


def run_batch(settings: Settings, work: Path, items: list[str], model: str) -> tuple[float, float, str]:
    """Seconds from submit to completed, seconds of the output export, and a note."""
    source = work / f"in-{uuid.uuid4().hex[:6]}.jsonl"
    source.write_text("".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": f"/v2/models/{model}/infer",
                                          "body": v2_body([text])}) + "\n" for i, text in enumerate(items)))
    start = time.perf_counter()
    batch = submit_batch(settings, source, service=SERVICE, wait=True, timeout=1800)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    status = batch.results(work / "out.jsonl", work / "errors.jsonl")
    export = time.perf_counter() - start
    assert status.state is BatchState.completed, status
    lines = (work / "out.jsonl").read_text().count("\n") + (work / "errors.jsonl").read_text().count("\n")
    assert lines == len(items), (lines, len(items))
    return seconds, export, f"completed {status.completed}, failed {status.failed}"


def build_model(kind: str, work: Path) -> Path:
    from tests.models import build_minilm_classifier, build_tiny_classifier

    if kind == "minilm":
        return build_minilm_classifier(work / "minilm-classifier")
    return build_tiny_classifier(work / "tiny-classifier")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="requests per run")
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm",
                        help="all-MiniLM-L6-v2 classifier (realistic) or a 2-layer toy (pipeline overhead)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (medians are reported)")
    args = parser.parse_args()

    from producers.publisher import Publisher
    from producers.topology import declare_topology
    from schemas.events import ServiceReady
    from workers.registry import ServiceRegistry

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    model_dir = build_model(args.model, work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    endpoint = f"{base}/v2/models/cls/infer"
    items = texts(args.n)
    rows: list[tuple[str, float, str]] = []
    with bench_vhost() as url:
        with Publisher(BrokerSettings(url=url)) as publisher:
            declare_topology(publisher.channel)
        ServiceRegistry(work).apply_event(ServiceReady(
            service=SERVICE, model_name="cls", backend="local", path=model_dir.as_uri(), task="sequence_classification",
            url=base, endpoints={"v2_infer": endpoint, "v1_predict": f"{base}/v1/models/cls:predict"},
        ))
        with process([sys.executable, "-m", "serving", "--model_name", "cls", "--model_dir", str(model_dir),
                      "--http_port", str(port), "--host", "127.0.0.1"]) as server:
            wait_http(f"{base}/v2/health/ready", proc=server)
            asyncio.run(direct_batched(endpoint, items[:256]))  # warm up
            with invoke_workers(url, work):
                scenarios = {label: Settings(broker=BrokerSettings(url=url), state_dir=work / "client",
                                             batch=BatchSettings(max_in_flight=bound))
                             for label, bound in BOUNDS}
                run_batch(next(iter(scenarios.values())), work, items[:200], "cls")  # warm up worker, connections
                # Rounds interleave the scenarios, so load from other work on the machine hits them alike.
                for _ in range(args.repeat):
                    rows.append((DIRECT, asyncio.run(direct_batched(endpoint, items)), "no broker, nothing durable"))
                    for label, settings in scenarios.items():
                        seconds, export, note = run_batch(settings, work, items, "cls")
                        rows.append((label, seconds, f"{note}; output export {export * 1000:.0f} ms"))
    shutil.rmtree(work, ignore_errors=True)
    report(args, rows)


def report(args: argparse.Namespace, rows: list[tuple[str, float, str]]) -> None:
    """Median over the rounds of each scenario, and the median per-round ratio to the direct client."""
    model = "all-MiniLM-L6-v2 classifier" if args.model == "minilm" else "2-layer toy BERT classifier"
    print(f"\nbatch benchmark: {args.n} single-text requests, {model}, {args.repeat} interleaved round(s), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end\n")
    print(f"| {'scenario':<45} | {'seconds':>8} | {'req/s':>8} | {'vs direct':>9} | notes")
    print(f"|{'-' * 47}|{'-' * 10}|{'-' * 10}|{'-' * 11}|------")
    direct = [seconds for name, seconds, _ in rows if name == DIRECT]
    for name in [DIRECT, *(label for label, _ in BOUNDS)]:
        runs = [(seconds, notes) for label, seconds, notes in rows if label == name]
        seconds = statistics.median(s for s, _ in runs)
        ratio = statistics.median(d / s for d, (s, _) in zip(direct, runs, strict=True))
        print(f"| {name:<45} | {seconds:>8.2f} | {args.n / seconds:>8.1f} | {ratio:>8.2f}x | {runs[-1][1]}")


if __name__ == "__main__":
    main()
