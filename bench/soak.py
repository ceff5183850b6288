"""Soak test: minutes of steady mixed traffic through real workers, with memory sampled throughout.

Starts the invoke and deploy workers as processes (`modelbus worker ...`, local backend) on a private
vhost, deploys a tiny classifier, then for `--minutes` sends InvokeRequested events at `--rate` per
second to it by service name, and every `--churn-s` seconds deploys and undeploys a second service.
Every few seconds it samples the RSS of each worker and of the model server. At the end it prints:

* memory: RSS at start (after warm-up) and end, peak, and growth per process;
* traffic: requests sent, confirmed, answered, failed, lost (confirmed but never answered) and
  duplicated (answered more than once; same result id, so consumers would drop them).

Not part of CI. Usage: python bench/soak.py [--minutes 10] [--rate 20] [--churn-s 30]
Needs RabbitMQ with the management API on 127.0.0.1 (a private vhost is created and deleted).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import bench_vhost  # noqa: E402
from producers import Publisher  # noqa: E402
from producers.topology import declare_topology  # noqa: E402
from schemas.envelope import CloudEvent, new_event  # noqa: E402
from schemas.events import (  # noqa: E402
    DeployRequested,
    InvokeCompleted,
    InvokeRequested,
    ServiceDeleted,
    ServiceReady,
    UndeployRequested,
)
from schemas.settings import BrokerSettings, Settings  # noqa: E402
from tests.models import build_tiny_classifier  # noqa: E402
from tests.reliability.harness import EventTap, WorkerProcess  # noqa: E402

SERVICE = "soak-classifier"
MB = 1024 * 1024


class Traffic(threading.Thread):
    """Publishes invoke requests at a steady rate for `seconds`, recording what the broker confirmed."""

    def __init__(self, settings: Settings, *, rate: float, reply_to: str, seconds: float) -> None:
        super().__init__(name="soak-traffic", daemon=True)
        self.settings, self.rate, self.reply_to, self.seconds = settings, rate, reply_to, seconds
        self.sent: dict[str, CloudEvent[Any]] = {}
        self.confirmed: set[str] = set()
        self.errors: Counter[str] = Counter()

    def publish(self, publisher: Publisher, event: CloudEvent[Any]) -> None:
        self.sent[event.id] = event
        try:
            publisher.publish(event)
            self.confirmed.add(event.id)
        except Exception as exc:  # counted and reported: a soak run reports, it does not stop
            self.errors[type(exc).__name__] += 1

    def run(self) -> None:
        start = time.monotonic()
        with Publisher(self.settings.broker) as publisher:
            i = 0
            while time.monotonic() - start < self.seconds:
                body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                    "data": [f"soak request {i} " + "word " * (i % 13)]}]}
                self.publish(publisher, new_event(InvokeRequested(service=SERVICE, body=body, reply_to=self.reply_to)))
                i += 1
                time.sleep(max(0.0, start + i / self.rate - time.monotonic()))


class Churn:
    """Deploys a second service every `every_s` seconds and undeploys it once it is ready (or failed).

    The undeploy waits for the deploy's answer: sent together, the two could run in either order on a
    worker with several task slots, and an undeploy that overtakes its deploy leaves a server behind.
    """

    def __init__(self, settings: Settings, traffic: Traffic, *, every_s: float, model_uri: str, reply_to: str) -> None:
        self.publisher = Publisher(settings.broker)
        self.traffic, self.every_s, self.model_uri, self.reply_to = traffic, every_s, model_uri, reply_to
        self.next_at = time.monotonic() + every_s
        self.pending: CloudEvent[DeployRequested] | None = None
        self.count = 0

    def step(self, answered: set[str]) -> None:
        if self.every_s <= 0:
            return
        if self.pending is not None and self.pending.id in answered:
            undeploy = UndeployRequested(service=self.pending.data.service, reply_to=self.reply_to)
            self.traffic.publish(self.publisher, new_event(undeploy))
            self.pending = None
        elif self.pending is None and time.monotonic() >= self.next_at:
            self.count += 1
            self.pending = new_event(DeployRequested(service=f"soak-churn-{self.count}", path=self.model_uri,
                                                     task="sequence_classification", reply_to=self.reply_to))
            self.traffic.publish(self.publisher, self.pending)
            self.next_at += self.every_s


def rss(pid: int) -> float | None:
    try:
        return psutil.Process(pid).memory_info().rss / MB
    except psutil.Error:
        return None


def servers_of(model_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "serving" in cmdline and any(str(model_dir) in a for a in cmdline):
            found.append(proc)
    return found


def memory_table(samples: dict[str, list[float]]) -> list[str]:
    rows = ["| process | samples | RSS start (MB) | RSS end (MB) | peak (MB) | growth (MB) | growth |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, values in samples.items():
        if not values:
            rows.append(f"| {name} | 0 | - | - | - | - | - |")
            continue
        k = max(1, len(values) // 10)  # mean of the first and last tenth, so one GC does not decide
        first, last = statistics.mean(values[:k]), statistics.mean(values[-k:])
        rows.append(f"| {name} | {len(values)} | {first:.1f} | {last:.1f} | {max(values):.1f} | "
                    f"{last - first:+.1f} | {100 * (last - first) / first:+.1f}% |")
    return rows


def traffic_table(traffic: Traffic, replies: EventTap) -> list[str]:
    answers: dict[str, list[CloudEvent[Any]]] = {}
    for event in replies.events():
        if event.causationid:
            answers.setdefault(event.causationid, []).append(event)
    rows = ["| kind | sent | confirmed | answered | ok | failed | lost | duplicates |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    ok_types = {InvokeRequested: InvokeCompleted, DeployRequested: ServiceReady, UndeployRequested: ServiceDeleted}
    for kind, ok_type in ok_types.items():
        ids = [eid for eid, ev in traffic.sent.items() if isinstance(ev.data, kind)]
        confirmed = [eid for eid in ids if eid in traffic.confirmed]
        answered = [eid for eid in confirmed if eid in answers]
        ok = sum(1 for eid in answered if isinstance(answers[eid][0].data, ok_type))
        dups = sum(len(answers[eid]) - 1 for eid in answered)
        distinct_ids = all(len({e.id for e in answers[eid]}) == 1 for eid in answered)
        rows.append(f"| {kind.__name__} | {len(ids)} | {len(confirmed)} | {len(answered)} | {ok} | "
                    f"{len(answered) - ok} | {len(confirmed) - len(answered)} | "
                    f"{dups}{'' if distinct_ids else ' (different ids!)'} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="How long to send traffic.")
    parser.add_argument("--rate", type=float, default=20.0, help="Invoke requests per second.")
    parser.add_argument("--churn-s", type=float, default=30.0, help="Seconds between deploy/undeploy pairs (0: off).")
    parser.add_argument("--sample-s", type=float, default=5.0, help="Seconds between RSS samples.")
    parser.add_argument("--drain-s", type=float, default=120.0, help="Longest wait for the last answers.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="modelbus-soak-") as tmp, bench_vhost("modelbus-soak") as url:
        work = Path(tmp)
        model_dir = build_tiny_classifier(work / "classifier")
        settings = Settings(broker=BrokerSettings(url=url), state_dir=work / "state", backend="local")
        settings.state_dir.mkdir()
        with Publisher(settings.broker) as publisher:
            declare_topology(publisher.channel)
        env = {"MODELBUS_LOG_LEVEL": "WARNING"}
        replies = EventTap(settings.broker.url, bindings=())
        workers = {name: WorkerProcess(name, settings, work / "logs", env=env).start() for name in ("deploy", "invoke")}
        try:
            ready = new_event(DeployRequested(service=SERVICE, path=model_dir.as_uri(),
                                              task="sequence_classification", reply_to=replies.queue))
            with Publisher(settings.broker) as publisher:
                publisher.publish(ready)
            replies.wait(lambda tap: bool(tap.messages), timeout=180, what="the soak service to be ready")
            replies.messages.clear()
            pids = {f"{name} worker": w.pid for name, w in workers.items()}
            pids.update({f"model server {i}": p.pid for i, p in enumerate(servers_of(model_dir), start=1)})
            samples: dict[str, list[float]] = {name: [] for name in pids}
            traffic = Traffic(settings, rate=args.rate, reply_to=replies.queue, seconds=args.minutes * 60)
            churn = Churn(settings, traffic, every_s=args.churn_s, model_uri=model_dir.as_uri(),
                          reply_to=replies.queue)
            print(f"soak: {args.minutes:g} min at {args.rate:g} invokes/s, churn every {args.churn_s:g}s, "
                  f"vhost {unquote(url.rsplit('/', 1)[1])}", flush=True)
            started = time.monotonic()
            traffic.start()
            next_sample = started
            while traffic.is_alive():
                replies.poll(0.2)
                churn.step({e.causationid for e in replies.events() if e.causationid})
                if time.monotonic() >= next_sample:
                    for name, pid in pids.items():
                        value = rss(pid)
                        if value is not None:
                            samples[name].append(value)
                    next_sample += args.sample_s
            churn.next_at = float("inf")  # no new churn; the pending one is still undeployed
            end = time.monotonic() + args.drain_s
            while time.monotonic() < end:
                answered = {e.causationid for e in replies.events() if e.causationid}
                churn.step(answered)
                if churn.pending is None and traffic.confirmed <= answered:
                    break
                replies.poll(0.5)
            elapsed = time.monotonic() - started
            alive = {name: w.alive for name, w in workers.items()}
            churn.publisher.close()
        finally:
            undeploy = new_event(UndeployRequested(service=SERVICE, reply_to=replies.queue))
            with Publisher(settings.broker) as publisher:
                publisher.publish(undeploy)
            with suppress(AssertionError):
                replies.wait(lambda tap: any(e.causationid == undeploy.id for e in tap.events()), timeout=30,
                             what="the soak service to be undeployed")
            for worker in workers.values():
                worker.stop()
            for proc in servers_of(model_dir):  # whatever the deploy worker left behind
                proc.kill()
            replies.close()
    print(f"\nran {elapsed:.0f}s; workers alive at the end: {alive}; publish errors: {dict(traffic.errors) or 0}\n")
    print("\n".join(memory_table(samples)))
    print()
    print("\n".join(traffic_table(traffic, replies)))


if __name__ == "__main__":
    main()
