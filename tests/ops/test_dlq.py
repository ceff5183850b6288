"""`modelbus dlq list|replay|purge` on the real broker.

Given dead letters (made by the task runner's headers, or by the broker itself when a consumer
rejects a message), an operator can list them without consuming them, send them back so a worker
processes them, and purge a dead-letter queue only after confirming.
"""

from __future__ import annotations

import json
import threading

import pika

from schemas import ServiceDeleted, UndeployRequested, decode, new_event
from schemas.events import DeployFailed
from schemas.topology import DEPLOY_QUEUE, EXCHANGE, REASON_HEADER, REPLAY_HEADER
from tests.conftest import get_message, ready_count, running_worker
from tests.ops.conftest import dead_letter, publish_event
from workers.app import create_app
from workers.errors import RetryableError
from workers.runner import event_task


def _dlq_depth(channel, expected: int | None = None) -> int:
    return ready_count(channel, DEPLOY_QUEUE.dead_letter_queue, expected)


def _list(cli):
    result = cli("dlq", "list", "deploy", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_shows_reason_type_ids_and_age_without_consuming(cli, ops_channel):
    # Given one dead letter from the task runner and one the broker dead-lettered on a reject
    ours = dead_letter(ops_channel, reason="KubernetesUnavailable", error="api 503")
    rejected = publish_event(ops_channel, "rejected-one")
    method, _, _ = get_message(ops_channel, DEPLOY_QUEUE.name, ack=False)
    ops_channel.basic_reject(method.delivery_tag, requeue=False)
    get_message(ops_channel, DEPLOY_QUEUE.dead_letter_queue, ack=False)  # wait until the broker moved it...
    ops_channel.basic_nack(0, multiple=True, requeue=True)  # ...and give it back

    # When the operator lists them, twice
    first, second = _list(cli), _list(cli)

    # Then both are shown with why they died, and nothing was consumed
    assert [(d["event_id"], d["reason"]) for d in first] == [(d["event_id"], d["reason"]) for d in second]
    by_id = {d["event_id"]: d for d in second}
    assert by_id[ours.id]["reason"] == "KubernetesUnavailable"
    assert by_id[ours.id]["error"] == "api 503"
    assert by_id[ours.id]["event_type"] == "io.modelbus.undeploy.requested"
    assert by_id[ours.id]["routing_key"] == "undeploy.requested"
    assert by_id[ours.id]["age_s"] >= 0
    assert by_id[rejected.id]["reason"] == "rejected"  # the broker's x-death reason
    assert by_id[rejected.id]["routing_key"] == "undeploy.requested"
    assert by_id[rejected.id]["deaths"] == 1
    assert {d["event_id"] for d in first} == {ours.id, rejected.id}
    assert _dlq_depth(ops_channel, 2) == 2


def test_replay_by_id_sends_that_dead_letter_back_with_its_routing_key_and_leaves_the_others(cli, ops_channel):
    chosen = dead_letter(ops_channel, service="chosen")
    other = dead_letter(ops_channel, service="other")

    result = cli("dlq", "replay", "deploy", "--id", chosen.id)

    assert result.exit_code == 0, result.output
    assert f"replayed {chosen.id}" in result.output
    # It is back on the worker queue, as it was published, marked as replayed, without the death headers
    _, props, body = get_message(ops_channel, DEPLOY_QUEUE.name)
    assert decode(body).id == chosen.id
    assert props.headers[REPLAY_HEADER] == 1
    assert REASON_HEADER not in props.headers
    assert props.message_id == chosen.id
    # and the other one is still dead-lettered
    assert [d["event_id"] for d in _list(cli)] == [other.id]


def test_a_replay_that_fails_half_way_loses_nothing(cli, ops_channel):
    # Given a dead letter whose routing key no queue is bound to, and a good one
    stuck = dead_letter(ops_channel, service="stuck", routing_key="nobody.listens")
    good = dead_letter(ops_channel, service="good")

    result = cli("dlq", "replay", "deploy", "--all")

    # Then the good one is replayed, the unroutable one stays in the DLQ, and the command says so
    assert result.exit_code == 1
    assert f"replayed {good.id}" in result.output
    assert "not replayed" in result.output
    assert [d["event_id"] for d in _list(cli)] == [stuck.id]
    assert decode(get_message(ops_channel, DEPLOY_QUEUE.name)[2]).id == good.id


def test_replay_needs_a_selection_and_reports_unknown_ids(cli, ops_channel):
    assert cli("dlq", "replay", "deploy").exit_code == 2
    result = cli("dlq", "replay", "deploy", "--id", "no-such-id")
    assert result.exit_code == 1
    assert "not found" in result.output


def test_a_replayed_dead_letter_is_processed_by_a_running_worker(cli, ops_channel, ops_settings):
    # Given a deploy worker whose undeploy handler fails until the operator fixes the cause
    settings = ops_settings.model_copy(update={"task_max_retries": 0})
    app = create_app(settings, ("deploy",), register_tasks=False)
    emitter = app.conf.modelbus_emitter
    fixed = threading.Event()
    handled: list[str] = []

    def handler(event):
        handled.append(event.id)
        if not fixed.is_set():
            raise RetryableError("cluster unreachable", reason="KubernetesUnreachable")
        emitter.emit(ServiceDeleted(service=event.data.service, backend="local", existed=True), cause=event)

    def failure(event, error):
        return DeployFailed(service=event.data.service, reason=error.reason, message=error.message)

    event_task(app, DEPLOY_QUEUE, "undeploy.requested", handler, failure, settings=settings, emitter=emitter)
    outcomes = ops_channel.queue_declare("", exclusive=True).method.queue
    ops_channel.queue_bind(outcomes, EXCHANGE, routing_key="service.deleted")
    event = new_event(UndeployRequested(service="flaky"))

    with running_worker(app):
        # When the event fails for good (no retries left) it ends in the DLQ
        ops_channel.basic_publish(EXCHANGE, event.routing_key, event.model_dump_json().encode(),
                                  pika.BasicProperties(content_type="application/cloudevents+json",
                                                       message_id=event.id, type=event.type), mandatory=True)
        _, props, _ = get_message(ops_channel, DEPLOY_QUEUE.dead_letter_queue, timeout=20, ack=False)
        ops_channel.basic_nack(0, multiple=True, requeue=True)
        assert props.headers[REASON_HEADER] == "KubernetesUnreachable"

        # and the operator fixes the cause and replays it
        fixed.set()
        result = cli("dlq", "replay", "deploy", "--all")
        assert result.exit_code == 0, result.output

        # Then the same worker (which had seen that event id) handles it and publishes the outcome
        deleted = decode(get_message(ops_channel, outcomes, timeout=20)[2])
    assert deleted.causationid == event.id
    assert handled == [event.id, event.id]
    assert _dlq_depth(ops_channel, 0) == 0
    emitter.close()


def test_purge_asks_for_confirmation(cli, ops_channel):
    dead_letter(ops_channel)
    dead_letter(ops_channel)

    # No answer (no terminal): refused, non-zero, nothing dropped
    result = cli("dlq", "purge", "deploy")
    assert result.exit_code != 0
    assert "--yes" in result.output
    assert _dlq_depth(ops_channel, 2) == 2
    # "no": nothing dropped
    result = cli("dlq", "purge", "deploy", input="n\n")
    assert result.exit_code != 0
    assert _dlq_depth(ops_channel, 2) == 2
    # "yes": dropped
    result = cli("dlq", "purge", "deploy", input="y\n")
    assert result.exit_code == 0, result.output
    assert "purged 2 message(s)" in result.output
    assert _dlq_depth(ops_channel, 0) == 0


def test_purge_with_yes_does_not_ask(cli, ops_channel):
    dead_letter(ops_channel)
    result = cli("dlq", "purge", "modelbus.deploy.dlq", "--yes")
    assert result.exit_code == 0, result.output
    assert _dlq_depth(ops_channel, 0) == 0


def test_an_unknown_queue_is_a_clear_error(cli):
    result = cli("dlq", "list", "nope")
    assert result.exit_code == 1
    assert "unknown queue 'nope'" in result.output
