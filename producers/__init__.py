"""The publishing side of modelbus: the confirmed publisher, the Python client and the CLI."""

from producers.client import ModelBus, RequestFailed, Service
from producers.errors import BrokerUnavailable, PublishError, PublishNacked, ReplyTimeout, Unroutable
from producers.publisher import Publisher
from producers.topology import TopologyConflict, declare_topology

__all__ = [
    "BrokerUnavailable",
    "ModelBus",
    "PublishError",
    "PublishNacked",
    "Publisher",
    "ReplyTimeout",
    "RequestFailed",
    "Service",
    "TopologyConflict",
    "Unroutable",
    "declare_topology",
]
