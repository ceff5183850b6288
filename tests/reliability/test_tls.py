"""amqps:// end to end: certificates verified against a configured CA, credentials kept out of errors."""

from __future__ import annotations

import pytest

from producers import BrokerUnavailable, Publisher
from schemas import UndeployRequested, decode, new_event
from schemas.settings import BrokerSettings, Settings
from schemas.topology import DEPLOY_QUEUE
from tests.conftest import get_message
from tests.reliability.tls import make_ca_and_server_cert, tls_proxy
from workers.app import create_app


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_ca_and_server_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_port(certs):
    _, cert, key = certs
    with tls_proxy(cert, key) as port:
        yield port


def _tls_url(broker_url: str, port: int) -> str:
    vhost = broker_url.rsplit("/", 1)[1]
    return f"amqps://guest:guest@localhost:{port}/{vhost}"


def test_publishing_over_amqps_verifies_the_broker_against_the_configured_ca(broker_url, tls_port, certs,
                                                                              channel, topology):
    ca, _, _ = certs
    channel.queue_purge(DEPLOY_QUEUE.name)
    settings = BrokerSettings(url=_tls_url(broker_url, tls_port), ca_file=ca)
    event = new_event(UndeployRequested(service="over-tls"))
    with Publisher(settings) as publisher:
        publisher.publish(event)
    assert decode(get_message(channel, DEPLOY_QUEUE.name)[2]) == event


def test_a_broker_certificate_from_an_unknown_ca_is_refused(broker_url, tls_port, tmp_path):
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other", ca_name="someone else")
    settings = BrokerSettings(url=_tls_url(broker_url, tls_port).replace("guest:guest", "guest:s3cret-pw"),
                              ca_file=other_ca, connect_attempts=1)
    with pytest.raises(BrokerUnavailable) as info:
        Publisher(settings).connect()
    assert "certificate verify failed" in str(info.value)
    assert "s3cret-pw" not in str(info.value)
    assert "amqps://guest:***@localhost" in str(info.value)


def test_celery_workers_connect_over_amqps_with_the_same_settings(broker_url, tls_port, certs):
    ca, _, _ = certs
    settings = Settings(broker=BrokerSettings(url=_tls_url(broker_url, tls_port), ca_file=ca))
    app = create_app(settings, ("deploy",), register_tasks=False)
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        assert connection.connected
        assert connection.transport_cls in ("amqp", "pyamqp") or connection.transport.driver_type == "amqp"
        assert connection.connection.sock.version() is not None  # a TLS socket: the handshake happened


def test_the_invoke_worker_connects_over_amqps_and_refuses_an_unknown_ca(broker_url, tls_port, certs, tmp_path):
    import asyncio

    from workers.invoke.amqp import Broker, BrokerError

    ca, _, _ = certs
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other", ca_name="someone else")

    async def connect(ca_file):
        broker = Broker(Settings(broker=BrokerSettings(url=_tls_url(broker_url, tls_port), ca_file=ca_file,
                                                       connect_timeout_s=5)))
        try:
            await broker.connect()
            return broker.connected
        finally:
            await broker.close()

    assert asyncio.run(connect(ca)) is True
    with pytest.raises(BrokerError, match="cannot connect to the broker"):
        asyncio.run(connect(other_ca))
