"""docs/operations.md names every metric a worker or model server exports, so dashboards can trust it."""

from __future__ import annotations

from prometheus_client import REGISTRY

# Importing them registers the worker metrics in the default registry, as a worker process does.
import workers.invoke.metrics
import workers.observability
from serving.metrics import ServingMetrics
from tests.ops.kustomize import REPO


def test_every_exported_metric_is_documented():
    names = {m.name for m in REGISTRY.collect() if m.name.startswith("modelbus_")}
    names |= {m.name for m in ServingMetrics("any").registry.collect()}
    assert len(names) > 15
    assert {workers.observability.EVENTS_CONSUMED._name, workers.invoke.metrics.REQUESTS._name} <= names
    guide = (REPO / "docs" / "operations.md").read_text()
    # prometheus_client reports counters without their _total suffix
    missing = sorted(n for n in names if f"`{n}`" not in guide and f"`{n}_total`" not in guide)
    assert not missing, f"undocumented metrics: {missing}"
