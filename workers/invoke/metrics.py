"""Prometheus metrics of the invoke worker (default registry; served by `start_metrics_server`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter("modelbus_invoke_requests_total", "InvokeRequested events taken from the queue.", ["protocol"])
RESULTS = Counter(
    "modelbus_invoke_results_total", "Published results, by outcome (completed, failed) and reason.",
    ["protocol", "outcome", "reason"],
)
DUPLICATES = Counter("modelbus_invoke_duplicates_total", "Redelivered requests answered from the result cache.")
REJECTED = Counter("modelbus_invoke_rejected_total", "Invalid messages dead-lettered, by reason.", ["reason"])
BATCH_SIZE = Histogram(
    "modelbus_invoke_batch_size", "Requests per upstream call.", ["protocol"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
LATENCY = Histogram(
    "modelbus_invoke_latency_seconds", "From the request event's time to its result being confirmed.",
    ["protocol"], buckets=_LATENCY_BUCKETS,
)
UPSTREAM_LATENCY = Histogram(
    "modelbus_invoke_upstream_seconds", "Duration of one upstream HTTP attempt.", ["protocol"],
    buckets=_LATENCY_BUCKETS,
)
RETRIES = Counter("modelbus_invoke_retries_total", "Upstream attempts retried, by cause.", ["reason"])
IN_FLIGHT = Gauge("modelbus_invoke_in_flight_calls", "Upstream calls in progress.")
PENDING = Gauge("modelbus_invoke_pending_requests", "Requests waiting in the micro-batcher.")
BREAKER_OPEN = Gauge("modelbus_invoke_circuit_open", "1 while a target's circuit is open.", ["target"])


class ProtocolMetrics:
    """The per-protocol children of the metrics above, looked up once (labels() is not free)."""

    def __init__(self, protocol: str) -> None:
        self.requests = REQUESTS.labels(protocol)
        self.batch_size = BATCH_SIZE.labels(protocol)
        self.latency = LATENCY.labels(protocol)
        self.upstream = UPSTREAM_LATENCY.labels(protocol)
        self.completed = RESULTS.labels(protocol, "completed", "")


_BY_PROTOCOL: dict[str, ProtocolMetrics] = {}


def for_protocol(protocol: str) -> ProtocolMetrics:
    found = _BY_PROTOCOL.get(protocol)
    if found is None:
        found = _BY_PROTOCOL[protocol] = ProtocolMetrics(protocol)
    return found
