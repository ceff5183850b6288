"""The service registry: what `modelbus services list` and the invoke worker read."""

from __future__ import annotations

from pathlib import Path

from schemas.events import ServiceDeleted, ServiceEndpoints, ServiceReady
from workers.invoke.targets import registry_fallback
from workers.registry import ServiceRecord, ServiceRegistry


def test_a_service_is_invokable_only_once_it_is_ready(tmp_path: Path) -> None:
    registry = ServiceRegistry(tmp_path)
    registry.upsert(ServiceRecord(name="sentiment", backend="local", status="deploying", model_name="sst2",
                                  path="file:///models/sst2", task="sequence_classification", profile="cpu-small"))
    lookup = registry_fallback(tmp_path)  # how the invoke worker resolves names it has not seen announced
    assert lookup("sentiment") is None

    registry.update("sentiment", status="ready", url="http://127.0.0.1:8081",
                    endpoints={"v2_infer": "http://127.0.0.1:8081/v2/models/sst2/infer"})
    ready = lookup("sentiment")
    assert isinstance(ready, ServiceReady)
    assert (ready.url, ready.model_name, ready.task.value) == ("http://127.0.0.1:8081", "sst2",
                                                              "sequence_classification")
    assert ready.endpoints.v2_infer == "http://127.0.0.1:8081/v2/models/sst2/infer"


def test_another_process_keeps_its_registry_fresh_from_outcome_events(tmp_path: Path) -> None:
    registry = ServiceRegistry(tmp_path)
    registry.apply_event(ServiceReady(service="llama3", model_name="llama3", backend="kserve",
                                      path="hf://meta-llama/meta-llama-3-8b-instruct", task="text_generation",
                                      url="http://llama3-predictor.ml.svc.cluster.local",
                                      endpoints=ServiceEndpoints(openai_base="http://x/openai/v1")))
    assert [(r.name, r.status, r.backend) for r in ServiceRegistry(tmp_path).list()] == [
        ("llama3", "ready", "kserve")]
    registry.apply_event(ServiceDeleted(service="llama3", backend="kserve", existed=True))
    assert registry.list() == []
    assert registry.remove("llama3") is False
