"""Prometheus metrics of the model server, on a registry of its own (served at ``/metrics``).

* ``modelbus_serving_requests_total{endpoint,status}``: requests by route template and status code;
* ``modelbus_serving_request_duration_seconds{endpoint}``: latency until the response is complete;
* ``modelbus_serving_batch_size``: rows per forward pass (above 1 means batching happened);
* ``modelbus_serving_queue_depth``: requests waiting for a batch;
* ``modelbus_serving_batch_duration_seconds``: time of one forward pass / ``generate()`` call.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServingMetrics:
    """The server's metric families. One instance per app, so tests can build several apps."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelbus_serving_requests", "HTTP requests by endpoint and status code.",
            ["endpoint", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "modelbus_serving_request_duration_seconds", "Time until the response is complete, by endpoint.",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelbus_serving_batch_size", "Rows per model forward pass.",
            ["model"], buckets=BATCH_BUCKETS, registry=self.registry,
        ).labels(model_name)
        self.batch_duration = Histogram(
            "modelbus_serving_batch_duration_seconds", "Duration of one batched model call.",
            ["model"], buckets=LATENCY_BUCKETS, registry=self.registry,
        ).labels(model_name)
        self.queue_depth = Gauge(
            "modelbus_serving_queue_depth", "Requests waiting for a batch.",
            ["model"], registry=self.registry,
        ).labels(model_name)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
