"""Broker connections cut while events are published and consumed: everyone reconnects, nothing is lost.

Given a publisher sending a steady stream of requests and a worker process consuming them, when
every client connection of the vhost is force-closed through the management API (twice, mid-stream),
then the publisher reconnects and re-sends what was not confirmed, the worker reconnects and resumes
consuming, and every request whose publish was confirmed gets its outcome.

This is what a broker restart (`rabbitmqctl stop_app` / `start_app`) looks like from the client side;
the broker is shared with other test runs, so the test cuts only its own vhost's connections.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from producers import Publisher
from producers.errors import BrokerUnavailable
from schemas.envelope import CloudEvent, new_event
from schemas.events import InvokeCompleted, ServiceDeleted, UndeployRequested
from schemas.settings import Settings
from schemas.topology import WORKER_QUEUES
from tests.conftest import management
from tests.reliability.conftest import invoke_request
from tests.reliability.harness import (
    EventTap,
    WorkerProcess,
    client_connections,
    close_connections,
    consumers,
    event_tap,
    label,
    wait_for,
)

RATE_PER_S = 100
TAIL_S = 1.0  # keep publishing this long after the last cut


class SteadyPublisher(threading.Thread):
    """Publishes events from `make(i)` at a steady rate until stopped; records what the broker confirmed."""

    def __init__(self, settings: Settings, make: Callable[[int], CloudEvent[Any]]) -> None:
        super().__init__(name="steady-publisher", daemon=True)
        self.settings = settings
        self.make = make
        self.confirmed: list[str] = []
        self.failed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with Publisher(self.settings.broker) as publisher:
            i = 0
            while not self.stop.is_set():
                start = time.monotonic()
                event = self.make(i)
                try:
                    publisher.publish(event)
                    self.confirmed.append(event.id)
                except BrokerUnavailable:
                    self.failed.append(event.id)
                i += 1
                time.sleep(max(0.0, 1 / RATE_PER_S - (time.monotonic() - start)))


def _cut_twice(settings: Settings, vhost: str, worker: WorkerProcess, publisher: SteadyPublisher,
               ) -> list[list[dict[str, Any]]]:
    """Cut all connections once the worker's and the publisher's are listed; again after they came back."""
    wait_for(lambda: len(client_connections(vhost)) > 0, timeout=20, interval=0.25,
             what="the worker's connections to be listed")
    worker_connections = {c["name"] for c in client_connections(vhost)}
    publisher.start()
    cuts = [close_connections(vhost, wait_until=lambda listed: any(c["name"] not in worker_connections
                                                                    for c in listed))]
    queue = WORKER_QUEUES[worker.name].name
    wait_for(lambda: consumers(settings, queue) == 1, timeout=30, what="the worker to consume again")
    before = {c["name"] for c in cuts[0]}
    cuts.append(close_connections(vhost, wait_until=lambda listed: len({c["name"] for c in listed} - before) >= 2))
    time.sleep(TAIL_S)  # a steady stream: requests also arrive after the last cut
    return cuts


def _run(settings: Settings, vhost: str, tap: EventTap, worker: WorkerProcess,
         make: Callable[[int], CloudEvent[Any]], answered: Callable[[CloudEvent[Any]], str | None],
         ) -> tuple[SteadyPublisher, list[list[dict[str, Any]]]]:
    publisher = SteadyPublisher(settings, make)
    try:
        cuts = _cut_twice(settings, vhost, worker, publisher)
    finally:
        publisher.stop.set()
        if publisher.is_alive():
            publisher.join(timeout=60)
    assert not publisher.is_alive()
    wanted = set(publisher.confirmed)
    try:
        tap.wait(lambda t: wanted <= {answered(e) for e in t.events()}, timeout=60,
                 what="an outcome for every confirmed request")
    except AssertionError:
        missing = wanted - {answered(e) for e in tap.events()}
        with management() as api:
            q = api.get(f"/queues/{quote(vhost, safe='')}/{WORKER_QUEUES[worker.name].name}").json()
        raise AssertionError(f"{len(missing)} of {len(wanted)} confirmed requests unanswered; queue: "
                             f"ready={q.get('messages_ready')} unacked={q.get('messages_unacknowledged')} "
                             f"consumers={q.get('consumers')}") from None
    assert worker.alive, worker.log()[-3000:]
    assert worker.starts == 1
    assert consumers(settings, WORKER_QUEUES[worker.name].name) == 1, "the worker does not consume any more"
    return publisher, cuts


def _summary(name: str, publisher: SteadyPublisher, cuts: list[list[dict[str, Any]]]) -> str:
    return (f"\n{name}: {len(publisher.confirmed)} published and confirmed, {len(publisher.failed)} not confirmed, "
            f"connections cut: {[sorted(label(c) for c in cut) for cut in cuts]}; every confirmed request answered")


def test_the_invoke_worker_and_publishers_survive_lost_connections(
    settings, vhost, broker_url, clean_queues, upstream, fast_retries, tmp_path, record_property,
) -> None:
    base_url, _ = upstream
    with event_tap(broker_url, bindings=()) as replies, \
            WorkerProcess("invoke", settings, tmp_path / "logs", env=fast_retries).start() as worker:
        publisher, cuts = _run(
            settings, vhost, replies, worker,
            lambda i: new_event(invoke_request(base_url, f"text {i}", reply_to=replies.queue)),
            lambda e: getattr(e.data, "request_id", None),
        )
    assert all("modelbus-invoke" in [label(c) for c in cut] for cut in cuts), "the worker's connection was not cut"
    assert all(len(cut) >= 2 for cut in cuts), "the publisher's connection was not cut"
    assert all(isinstance(e.data, InvokeCompleted) for e in replies.events())
    print(_summary("invoke", publisher, cuts))
    record_property("not_confirmed", len(publisher.failed))


def test_the_deploy_worker_and_publishers_survive_lost_connections(
    settings, vhost, broker_url, clean_queues, tmp_path, record_property,
) -> None:
    with event_tap(broker_url, bindings=("service.deleted",)) as outcomes, \
            WorkerProcess("deploy", settings, tmp_path / "logs", env={"MODELBUS_LOG_LEVEL": "WARNING"}).start() \
            as worker:
        # UndeployRequested of services that never existed: cheap, and answered with ServiceDeleted.
        publisher, cuts = _run(settings, vhost, outcomes, worker,
                               lambda i: new_event(UndeployRequested(service=f"gone-{i}")), lambda e: e.causationid)
    assert all(len(cut) >= 2 for cut in cuts), "the worker's or the publisher's connections were not cut"
    assert all(isinstance(e.data, ServiceDeleted) for e in outcomes.events())
    print(_summary("deploy", publisher, cuts))
    record_property("not_confirmed", len(publisher.failed))
