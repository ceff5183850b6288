"""Throughput of the embedded model server with server-side dynamic batching on and off.

A MiniLM classifier (all-MiniLM-L6-v2's encoder under a sequence-classification head) is served
twice by ``python -m serving``: with ``--max_batch_size 32`` and with ``--max_batch_size 1``
(batching off, which is how KServe's runtime behaves). Against each, 64 concurrent clients send
single-text v2 requests in a closed loop, and a single client sends them one after another.
A last row shows a client that sends v2 batches of 32 texts itself, for reference.

    python bench/serving.py [--requests 640] [--rounds 3] [--concurrency 64] [--max_batch_wait_ms 0]

Prints a table (requests/s, texts/s, p50/p99 latency) and the on/off ratio at 64 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving.samples import build_minilm_classifier
from tests.serving_process import running_server

PHRASES = ("the movie was great fun and i loved every minute of it",
           "what a terrible boring waste of time the plot made no sense at all",
           "an honest moving story with fine acting and a sharp script")
WORDS = [word for phrase in PHRASES for word in phrase.split()]


def sentence(i: int) -> str:
    """Deterministic 8-16 word sentences, so every run sends the same texts."""
    length = 8 + i % 9
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(length))


def body(texts: list[str]) -> dict[str, object]:
    return {"inputs": [{"name": "input-0", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


@dataclass
class Result:
    label: str
    requests: int
    texts: int
    seconds: float
    latencies: list[float]

    def row(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return (f"| {self.label:<44} | {self.requests / self.seconds:>10.1f} | {self.texts / self.seconds:>8.1f} "
                f"| {p50:>8.1f} | {p99:>8.1f} |")


class Connection:
    """A minimal keep-alive HTTP/1.1 client: 64 of them cost the shared 2 CPUs far less than httpx."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> Connection:
        parsed = urlsplit(url)
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        return cls(reader, writer, parsed.netloc)

    async def post(self, path: str, payload: bytes) -> bytes:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        status = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length)
        if b" 200 " not in status:
            raise RuntimeError(f"{status!r}: {data!r}")
        return data

    def close(self) -> None:
        self.writer.close()


async def closed_loop(
    url: str, *, clients: int, requests: int, texts_per_request: int = 1
) -> tuple[float, list[float]]:
    """``clients`` workers share ``requests`` requests; each sends its next one when the last is answered."""
    path = urlsplit(url).path
    latencies: list[float] = []
    connections = [await Connection.open(url) for _ in range(clients)]

    async def worker(connection: Connection, numbers: Iterator[int]) -> None:
        for i in numbers:
            texts = [sentence(i * texts_per_request + k) for k in range(texts_per_request)]
            payload = orjson.dumps(body(texts))
            started = time.perf_counter()
            await connection.post(path, payload)
            latencies.append(time.perf_counter() - started)

    try:
        warmup = iter(range(clients * 2))  # connections accepted, first batches run
        await asyncio.gather(*(worker(c, warmup) for c in connections))
        latencies.clear()
        numbers = iter(range(requests))
        started = time.perf_counter()
        await asyncio.gather(*(worker(c, numbers) for c in connections))
        return time.perf_counter() - started, latencies
    finally:
        for connection in connections:
            connection.close()


def measure(label: str, url: str, *, clients: int, requests: int, texts_per_request: int = 1) -> Result:
    seconds, latencies = asyncio.run(closed_loop(url, clients=clients, requests=requests,
                                                 texts_per_request=texts_per_request))
    return Result(label, requests, requests * texts_per_request, seconds, latencies)


def median_run(runs: list[Result]) -> Result:
    return sorted(runs, key=lambda r: r.requests / r.seconds)[len(runs) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=640, help="requests per concurrent run")
    parser.add_argument("--sequential_requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating on/off rounds; the median is shown")
    parser.add_argument("--max_batch_size", type=int, default=32)
    parser.add_argument("--max_batch_wait_ms", type=float, default=0.0)
    args = parser.parse_args()

    runs: dict[str, list[Result]] = {}

    def record(key: str, result: Result) -> None:
        runs.setdefault(key, []).append(result)

    with tempfile.TemporaryDirectory() as tmp:
        model = build_minilm_classifier(Path(tmp) / "minilm-classifier")
        base = ["--model_name", "minilm", "--model_dir", str(model), "--max_batch_wait_ms", str(args.max_batch_wait_ms)]
        # Both servers run side by side and the runs alternate, so load from anything else on the
        # machine hits both modes alike; an idle server costs nothing.
        with running_server([*base, "--max_batch_size", str(args.max_batch_size)]) as on_url, \
                running_server([*base, "--max_batch_size", "1"]) as off_url:
            urls = {"on": f"{on_url}/v2/models/minilm/infer", "off": f"{off_url}/v2/models/minilm/infer"}
            for _ in range(args.rounds):
                for mode, url in urls.items():
                    record(f"{mode}-concurrent", measure(f"batching {mode}, {args.concurrency} concurrent clients",
                                                         url, clients=args.concurrency, requests=args.requests))
                for mode, url in urls.items():
                    record(f"{mode}-sequential", measure(f"batching {mode}, 1 sequential client", url,
                                                         clients=1, requests=args.sequential_requests))
                record("client-batches", measure("batching off, 1 client sending batches of 32", urls["off"],
                                                 clients=1, requests=max(1, args.requests // 32), texts_per_request=32))

    results = {key: median_run(values) for key, values in runs.items()}
    print(f"\nMiniLM classifier, v2 single-text requests, max_batch_size {args.max_batch_size}, "
          f"max_batch_wait_ms {args.max_batch_wait_ms:g}, median of {args.rounds} alternating rounds\n")
    print(f"| {'run':<44} | {'requests/s':>10} | {'texts/s':>8} | {'p50 ms':>8} | {'p99 ms':>8} |")
    print(f"|{'-' * 46}|{'-' * 11}:|{'-' * 9}:|{'-' * 9}:|{'-' * 9}:|")
    for key in ("on-concurrent", "off-concurrent", "on-sequential", "off-sequential", "client-batches"):
        print(results[key].row())
    on, off = results["on-concurrent"], results["off-concurrent"]
    ratio = (on.requests / on.seconds) / (off.requests / off.seconds)
    print(f"\nbatching on / off at {args.concurrency} concurrent clients: {ratio:.1f}x (target >= 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
