"""A real broker restart (`rabbitmqctl stop_app` / `start_app`) while a publisher is sending.

Given a publisher sending a steady stream of events into a durable quorum queue, when RabbitMQ's
application is stopped and started again mid-stream, then the publisher reconnects on its own and
every event whose publish was confirmed is still in the queue afterwards.

The worker side of the same fault (connections dropped and re-opened) is covered by
test_connection_loss.py, which cuts connections without stopping the shared broker.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest

from producers import Publisher
from producers.errors import BrokerUnavailable
from schemas import UndeployRequested, decode, new_event
from schemas.settings import BrokerSettings
from schemas.topology import DEPLOY_QUEUE

pytestmark = [
    pytest.mark.disruptive,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl on this machine"),
]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def _drain(channel, queue: str) -> list[str]:
    ids = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return ids
        ids.append(decode(body).id)


def test_a_publisher_survives_a_broker_restart_and_no_confirmed_event_is_lost(broker_url, topology):
    import pika

    settings = BrokerSettings(url=broker_url, connect_attempts=30, retry_delay_s=0.5)
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    connection.channel().queue_purge(DEPLOY_QUEUE.name)
    connection.close()
    confirmed: list[str] = []
    unconfirmed: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        with Publisher(settings) as publisher:
            i = 0
            while not stop.is_set():
                event = new_event(UndeployRequested(service=f"restart-{i}"))
                try:
                    publisher.publish(event)
                    confirmed.append(event.id)
                except BrokerUnavailable:
                    unconfirmed.append(event.id)
                i += 1
                time.sleep(0.01)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        before = len(confirmed)
        _rabbitmqctl("stop_app")
        time.sleep(2.0)
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")
        deadline = time.monotonic() + 60
        while len(confirmed) <= before + 50 and time.monotonic() < deadline:
            time.sleep(0.2)  # publishing resumes by itself after the restart
    finally:
        stop.set()
        thread.join(timeout=60)
    assert len(confirmed) > before + 50, "the publisher did not resume after the restart"

    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        in_queue = _drain(connection.channel(), DEPLOY_QUEUE.name)
    finally:
        connection.close()
    assert set(confirmed) <= set(in_queue), f"{len(set(confirmed) - set(in_queue))} confirmed events were lost"
    print(f"\nbroker restart: {len(confirmed)} confirmed (all kept), {len(unconfirmed)} refused while down")
