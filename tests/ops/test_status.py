"""`modelbus status` against the real broker: the numbers it shows are the numbers in the queues.

Given messages the test put into the event queues and dead-letter queues (some held unacked by a
consumer), when an operator runs `modelbus status --json`, then ready/unacked/consumer counts and
dead-letter depths match, through the management API and through the AMQP fallback alike.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pika

from schemas.topology import DEPLOY_QUEUE, INVOKE_QUEUE, TRAIN_QUEUE
from tests.conftest import MANAGEMENT, ready_count, running_worker
from tests.ops.conftest import dead_letter, publish_event
from workers.app import create_app

NO_MANAGEMENT = {"MODELBUS_BROKER__MANAGEMENT_URL": "http://127.0.0.1:9"}  # discard port: nothing listens


def _status(cli, *args, extra_env=None):
    result = cli("status", "--json", *args, extra_env=extra_env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _queue(report, name):
    return next(q for q in report["queues"] if q["name"] == name)


def _eventually(cli, check, *args, timeout=20.0, extra_env=None):
    """Status until `check(report)` holds: management statistics lag the broker by a few seconds."""
    deadline = time.monotonic() + timeout
    while True:
        report = _status(cli, *args, extra_env=extra_env)
        if check(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.5)


def test_status_shows_ready_unacked_consumers_and_dead_letters_from_the_management_api(cli, ops_channel, ops_url):
    # Given three deploy events, one of them taken (unacked) by a consumer, and dead letters in two DLQs
    for i in range(3):
        publish_event(ops_channel, f"svc-{i}")
    dead_letter(ops_channel, worker="deploy", reason="KubernetesUnavailable")
    dead_letter(ops_channel, worker="deploy", reason="InvalidEvent")
    dead_letter(ops_channel, worker="train", reason="InternalError")
    holder = pika.BlockingConnection(pika.URLParameters(ops_url))
    try:
        held = holder.channel()
        held.basic_qos(prefetch_count=1)
        held.basic_consume(DEPLOY_QUEUE.name, lambda *a: None, auto_ack=False)
        holder.process_data_events(time_limit=0.5)

        # When the operator asks for the status (management API)
        def settled(r):
            q = _queue(r, DEPLOY_QUEUE.name)
            return (q["ready"], q["unacked"], q["consumers"], q["dead_letters"]) == (2, 1, 1, 2)

        report = _eventually(cli, settled, "--source", "management")
    finally:
        holder.close()

    # Then every number matches what the test put there
    assert report["source"] == "management"
    deploy = _queue(report, DEPLOY_QUEUE.name)
    assert (deploy["ready"], deploy["unacked"], deploy["consumers"], deploy["dead_letters"]) == (2, 1, 1, 2)
    train = _queue(report, TRAIN_QUEUE.name)
    assert (train["ready"], train["dead_letters"]) == (0, 1)
    assert _queue(report, INVOKE_QUEUE.name)["dead_letters"] == 0
    # and the latest failures show why, newest first, without consuming the dead letters
    assert sorted(f["reason"] for f in report["failures"]) == ["InternalError", "InvalidEvent",
                                                                 "KubernetesUnavailable"]
    assert ready_count(ops_channel, DEPLOY_QUEUE.dead_letter_queue, 2) == 2


def test_status_falls_back_to_amqp_when_the_management_api_does_not_answer(cli, ops_channel):
    # Given two deploy events and one invoke dead letter, and a management API that is not there
    publish_event(ops_channel, "a")
    publish_event(ops_channel, "b")
    dead_letter(ops_channel, worker="invoke", reason="UpstreamUnavailable")

    report = _status(cli, extra_env=NO_MANAGEMENT)

    # Then the ready counts and DLQ depths still match, and it says what it could not see
    assert report["source"] == "amqp"
    deploy = _queue(report, DEPLOY_QUEUE.name)
    assert (deploy["ready"], deploy["unacked"], deploy["dead_letters"]) == (2, None, 0)
    assert _queue(report, INVOKE_QUEUE.name)["dead_letters"] == 1
    assert any("management API" in note and "falling back to AMQP" in note for note in report["notes"])


def test_status_says_clearly_when_neither_source_answers(cli):
    result = cli("status", extra_env={**NO_MANAGEMENT, "MODELBUS_BROKER__URL": "amqp://guest:secret@127.0.0.1:9/"})

    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "management API at http://127.0.0.1:9 unreachable" in text
    assert "AMQP at amqp://guest:***@127.0.0.1:9/" in text
    assert "secret" not in result.output


def test_status_lists_celery_workers_online_and_the_invoke_worker_by_its_consumers(cli, ops_channel, ops_settings):
    # Given a running deploy worker (Celery) and a consumer on the invoke queue
    app = create_app(ops_settings, ("deploy",), register_tasks=False)
    ops_channel.basic_consume(INVOKE_QUEUE.name, lambda *a: None, auto_ack=False)
    with running_worker(app):
        report = _status(cli, extra_env=NO_MANAGEMENT)

    by_worker = {w["worker"]: w for w in report["workers"]}
    assert by_worker["deploy"]["kind"] == "celery"
    assert by_worker["deploy"]["in_flight"] == 0
    assert by_worker["invoke"]["kind"] == "consumer"
    assert _queue(report, DEPLOY_QUEUE.name)["consumers"] == 1  # the worker's event gateway


def test_the_status_screen_is_a_readable_table(cli, ops_channel):
    dead_letter(ops_channel, worker="deploy", reason="KubernetesUnavailable", error="api 503 from the cluster")

    result = cli("status", extra_env=NO_MANAGEMENT)

    assert result.exit_code == 0, result.output
    assert "modelbus.deploy" in result.output
    assert "Latest failures" in result.output
    assert "KubernetesUnavailable" in result.output


def test_status_shows_the_services_of_the_registry(cli, ops_channel, tmp_path):
    from workers.registry import ServiceRecord, ServiceRegistry

    registry = ServiceRegistry(tmp_path / "state")  # the state dir the cli fixture points at
    registry.upsert(ServiceRecord(name="sentiment", backend="local", status="ready", model_name="sentiment",
                                  path="file:///models/sentiment", url="http://127.0.0.1:8080"))
    registry.upsert(ServiceRecord(name="broken", backend="local", status="failed", model_name="broken",
                                  path="hf://org/broken", reason="FailedToLoad"))

    report = _status(cli, extra_env=NO_MANAGEMENT)

    by_name = {s["name"]: s for s in report["services"]}
    assert by_name["sentiment"]["status"] == "ready"
    assert by_name["sentiment"]["url"] == "http://127.0.0.1:8080"
    assert by_name["broken"]["reason"] == "FailedToLoad"


def test_status_watch_refreshes_until_interrupted(ops_url, ops_channel, tmp_path):
    env = {**os.environ, "MODELBUS_BROKER__URL": ops_url, "MODELBUS_STATE_DIR": str(tmp_path / "state"),
           **NO_MANAGEMENT}
    proc = subprocess.Popen([sys.executable, "-m", "producers.cli", "status", "--watch", "--json", "--interval", "0.2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        publish_event(ops_channel, "arrives-while-watching")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            later = json.loads(proc.stdout.readline())
            if _queue(later, DEPLOY_QUEUE.name)["ready"] == 1:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        proc.stdout.close()
        proc.stderr.close()
    assert _queue(first, DEPLOY_QUEUE.name)["ready"] == 0
    assert _queue(later, DEPLOY_QUEUE.name)["ready"] == 1
    assert code == 0


def test_the_management_url_may_carry_its_own_credentials(cli, ops_channel, ops_url):
    # Given a broker URL whose password the management API would refuse, and a management URL with a good one
    publish_event(ops_channel, "x")
    wrong = ops_url.replace("guest:guest@", "guest:wrong@")
    report = _eventually(
        cli, lambda r: _queue(r, DEPLOY_QUEUE.name)["ready"] == 1, "--source", "management",
        extra_env={"MODELBUS_BROKER__URL": wrong,
                   "MODELBUS_BROKER__MANAGEMENT_URL": MANAGEMENT.replace("://", "://guest:guest@", 1)},
    )
    assert report["source"] == "management"
    assert _queue(report, DEPLOY_QUEUE.name)["ready"] == 1
