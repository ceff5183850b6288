"""Publishing through the real broker: confirmed, mandatory, CloudEvents properties, clear failures."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
from typer.testing import CliRunner

from producers import BrokerUnavailable, Publisher, Unroutable, declare_topology
from producers.cli import app
from schemas import DeployRequested, ServiceDeleted, UndeployRequested, decode, encode, new_event
from schemas.settings import BrokerSettings
from schemas.topology import DEPLOY_QUEUE
from tests.conftest import get_message, management

SEED = {"service": "sentiment", "model_name": "sentiment", "profile": "1xa100",
        "path": "huggingface://distilbert/distilbert-base-uncased-finetuned-sst-2-english"}


def _get_one(channel, queue):
    return get_message(channel, queue, timeout=5)


@pytest.fixture
def deploy_queue(channel, topology):
    channel.queue_purge(DEPLOY_QUEUE.name)
    yield DEPLOY_QUEUE.name
    channel.queue_purge(DEPLOY_QUEUE.name)


def test_python_api_publishes_into_the_bound_queue_with_cloudevents_properties(settings, channel, deploy_queue):
    event = new_event(DeployRequested(**SEED))
    with Publisher(settings.broker) as publisher:
        publisher.publish(event)
    method, props, body = _get_one(channel, deploy_queue)
    assert method.routing_key == "deploy.requested"
    assert props.message_id == event.id
    assert props.correlation_id == event.correlationid
    assert props.type == "io.modelbus.deploy.requested"
    assert props.content_type == "application/cloudevents+json"
    assert props.delivery_mode == 2
    assert decode(body) == event


def test_cli_publish_validates_and_publishes(settings, channel, deploy_queue, monkeypatch):
    monkeypatch.setenv("MODELBUS_BROKER__URL", settings.broker.url)
    result = CliRunner().invoke(app, ["publish", "DeployRequested", "--data", json.dumps(SEED)])
    assert result.exit_code == 0, result.output
    _, props, body = _get_one(channel, deploy_queue)
    event = decode(body)
    assert event.data.service == "sentiment"
    assert str(event.data.path) == SEED["path"]
    assert props.message_id in result.output


def test_cli_publish_reads_data_from_a_file(settings, channel, deploy_queue, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELBUS_BROKER__URL", settings.broker.url)
    path = tmp_path / "undeploy.json"
    path.write_text(json.dumps({"service": "sentiment"}))
    result = CliRunner().invoke(app, ["publish", "undeploy.requested", "--data", f"@{path}"])
    assert result.exit_code == 0, result.output
    assert decode(_get_one(channel, deploy_queue)[2]).data == UndeployRequested(service="sentiment")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**SEED, "service": "Sentiment_1"}, "service"),
        ({**SEED, "path": "gs://bucket/model"}, "scheme 'gs' is not allowed"),
        ({**SEED, "envs": [{"name": "HF_TOKEN", "value": "hf_x"}]}, "secret reference"),
        ({**SEED, "colour": "blue"}, "colour"),
    ],
)
def test_cli_refuses_an_invalid_event_and_publishes_nothing(settings, channel, deploy_queue, monkeypatch,
                                                            data, message):
    monkeypatch.setenv("MODELBUS_BROKER__URL", settings.broker.url)
    result = CliRunner().invoke(app, ["publish", "DeployRequested", "--data", json.dumps(data)])
    assert result.exit_code == 1
    assert message in result.output
    assert channel.queue_declare(deploy_queue, passive=True).method.message_count == 0


def test_cli_refuses_an_unknown_event_type_and_bad_json(settings, monkeypatch):
    monkeypatch.setenv("MODELBUS_BROKER__URL", settings.broker.url)
    result = CliRunner().invoke(app, ["publish", "DeployWished", "--data", "{}"])
    assert result.exit_code == 1
    assert "unknown event type" in result.output
    result = CliRunner().invoke(app, ["publish", "DeployRequested", "--data", "{not json"])
    assert result.exit_code == 1
    assert "not valid JSON" in result.output


def test_an_unroutable_event_raises_instead_of_vanishing(broker_url, vhost):
    # A vhost-fresh exchange with no queues bound: nothing would receive the event.
    settings = BrokerSettings(url=broker_url)
    with Publisher(settings) as publisher:
        publisher.channel.exchange_declare("modelbus.events", exchange_type="topic", durable=True)
        with pytest.raises(Unroutable, match="no queue is bound"):
            publisher.publish(new_event(UndeployRequested(service="x")), routing_key="nobody.listens")


def test_an_unreachable_broker_is_a_clear_error_after_bounded_attempts():
    settings = BrokerSettings(url="amqp://guest:secret-pw@127.0.0.1:1/%2F", connect_attempts=2, retry_delay_s=0.01)
    with pytest.raises(BrokerUnavailable) as info:
        Publisher(settings).connect()
    assert "after 2 attempts" in str(info.value)
    assert "secret-pw" not in str(info.value)


def test_the_publisher_reconnects_after_the_connection_is_lost(settings, channel, deploy_queue):
    publisher = Publisher(settings.broker)
    publisher.publish(new_event(UndeployRequested(service="one")))
    publisher._connection.close()  # the connection drops (broker restart, network) between publishes
    publisher.publish(new_event(UndeployRequested(service="two")))
    publisher.close()
    services = [decode(_get_one(channel, deploy_queue)[2]).data.service for _ in range(2)]
    assert services == ["one", "two"]


def test_declaring_the_topology_twice_is_harmless(settings, channel):
    with Publisher(settings.broker) as publisher:
        first = declare_topology(publisher.channel)
        publisher.publish(new_event(UndeployRequested(service="kept")))
        second = declare_topology(publisher.channel)
    assert first == second
    # the message published between the two declarations is still there
    assert decode(_get_one(channel, DEPLOY_QUEUE.name)[2]).data.service == "kept"


def test_cli_topology_declare_is_idempotent(settings, monkeypatch):
    monkeypatch.setenv("MODELBUS_BROKER__URL", settings.broker.url)
    for _ in range(2):
        result = CliRunner().invoke(app, ["topology", "declare"])
        assert result.exit_code == 0, result.output
        assert "modelbus.deploy.dlq" in result.output


def test_a_message_rejected_from_a_worker_queue_lands_in_its_dlq(settings, channel, topology):
    channel.queue_purge(DEPLOY_QUEUE.dead_letter_queue)
    event = new_event(UndeployRequested(service="rejected"))
    with Publisher(settings.broker) as publisher:
        publisher.publish(event)
    method, _, _ = get_message(channel, DEPLOY_QUEUE.name, ack=False)
    channel.basic_reject(method.delivery_tag, requeue=False)
    _, props, body = _get_one(channel, DEPLOY_QUEUE.dead_letter_queue)
    assert decode(body) == event
    assert props.headers["x-death"][0]["queue"] == DEPLOY_QUEUE.name


def test_the_client_keeps_its_reply_queue_and_the_replies_in_it_across_a_reconnect(settings, topology, channel):
    from producers import ModelBus

    bus = ModelBus(settings)
    try:
        queue = bus.reply_queue
        request = bus.send(UndeployRequested(service="across-a-reconnect"))
        bus._publisher._connection.close()  # the connection drops while the request is being handled
        # the outcome arrives while the client is away...
        outcome = new_event(ServiceDeleted(service="across-a-reconnect", backend="local", existed=True), cause=request)
        channel.basic_publish("", queue, encode(outcome), properties=pika.BasicProperties(delivery_mode=2))
        # ...and the client, reconnected, still gets it from the same queue
        assert bus.wait(request, timeout=10).id == outcome.id
        assert bus.reply_queue == queue
        assert bus.send(UndeployRequested(service="after")).data.reply_to == queue
    finally:
        bus.close()
    # a closed client leaves no queue behind
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
        channel.connection.channel().queue_declare(queue, passive=True)
    assert gone.value.reply_code == 404


def test_a_connected_clients_reply_queue_does_not_expire_between_send_and_wait(settings, topology, channel):
    from producers import ModelBus

    short = settings.model_copy(update={"broker": settings.broker.model_copy(update={"reply_queue_expires_s": 0.5})})
    with ModelBus(short) as bus:
        request = bus.send(UndeployRequested(service="slow-outcome"))  # wait=False, as for a long training run
        time.sleep(2.0)  # four expiry periods without a `wait`
        outcome = new_event(ServiceDeleted(service="slow-outcome", backend="local", existed=True), cause=request)
        channel.basic_publish("", bus.reply_queue, encode(outcome), properties=pika.BasicProperties(delivery_mode=2))
        assert bus.wait(request, timeout=10).id == outcome.id


def test_a_reply_queue_left_behind_by_a_dead_client_expires(settings, topology, vhost):
    from producers import ModelBus

    short = settings.model_copy(update={"broker": settings.broker.model_copy(update={"reply_queue_expires_s": 0.5})})
    bus = ModelBus(short)
    queue = bus.reply_queue
    bus._publisher._connection.close()  # the client dies without closing
    # asked through the management API: declaring the queue, even passively, would count as using it
    with management() as api:
        deadline = time.monotonic() + 15
        while api.get(f"/queues/{quote(vhost, safe='')}/{queue}").status_code != 404:
            assert time.monotonic() < deadline, f"{queue} was not deleted after its expiry"
            time.sleep(0.2)
