"""Connection parameters for pika from the broker settings, TLS included."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import pika

from schemas.settings import BrokerSettings


def ssl_context(broker: BrokerSettings) -> ssl.SSLContext:
    """A verifying TLS context: the configured CA (or the system's), optional client certificate."""
    context = ssl.create_default_context(cafile=str(broker.ca_file) if broker.ca_file else None)
    if broker.cert_file:
        context.load_cert_chain(str(broker.cert_file), str(broker.key_file) if broker.key_file else None)
    return context


def pika_parameters(broker: BrokerSettings) -> pika.URLParameters:
    """Parameters for `pika.BlockingConnection`; `amqps://` URLs verify the server certificate."""
    params = pika.URLParameters(broker.url)
    params.heartbeat = broker.heartbeat_s
    params.socket_timeout = broker.connect_timeout_s
    params.blocked_connection_timeout = broker.confirm_timeout_s
    params.connection_attempts = 1  # attempts are counted (with backoff) by our own retry loop
    if urlsplit(broker.url).scheme == "amqps":
        host = urlsplit(broker.url).hostname or "localhost"
        params.ssl_options = pika.SSLOptions(ssl_context(broker), server_hostname=host)
    return params
