"""The model registry: versions are recorded once, `store://` references resolve, processes can share it."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from workers.models_registry import ModelRegistry, ModelVersion, UnknownModel


def version(name: str = "sentiment", ver: str = "v1", **kw: object) -> ModelVersion:
    fields: dict[str, object] = {"base_model": "file:///models/minilm", "path": f"file:///artifacts/{name}/{ver}/"}
    fields.update(kw)
    return ModelVersion("default", name, ver, **fields)  # type: ignore[arg-type]


def test_a_recorded_version_resolves_by_version_and_by_latest(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.sqlite3")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    registry.record(version(ver="v1", created=t0, metrics={"eval_accuracy": 0.9}, labels=["neg", "pos"]))
    registry.record(version(ver="v2", created=t0 + timedelta(hours=1)))

    assert registry.resolve("store://default/model/sentiment:v1") == "file:///artifacts/sentiment/v1/"
    assert registry.resolve("store://default/model/sentiment") == "file:///artifacts/sentiment/v2/"
    assert registry.resolve("store://default/model/sentiment:latest") == "file:///artifacts/sentiment/v2/"
    # the platform's key form (with the kind segment) is accepted too
    assert registry.resolve("store://default/model/huggingface/sentiment:v1") == "file:///artifacts/sentiment/v1/"
    v1 = registry.get("default", "sentiment", "v1")
    assert v1.metrics == {"eval_accuracy": 0.9}
    assert v1.labels == ["neg", "pos"]
    assert v1.created == t0
    assert v1.store_uri == "store://default/model/sentiment:v1"
    assert [m.version for m in registry.versions(name="sentiment")] == ["v2", "v1"]


def test_an_unknown_reference_is_a_permanent_unknown_model_error(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.sqlite3")
    registry.record(version(ver="v1"))

    with pytest.raises(UnknownModel) as missing_version:
        registry.resolve("store://default/model/sentiment:v9")
    with pytest.raises(UnknownModel):
        registry.resolve("store://other/model/sentiment")

    assert missing_version.value.reason == "UnknownModel"
    assert "store://default/model/sentiment:v9" in str(missing_version.value)


def test_recording_the_same_version_twice_keeps_the_first_record(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.sqlite3")
    first = registry.record(version(ver="v1", event_id="ev-1", metrics={"eval_loss": 0.1}))
    again = registry.record(version(ver="v1", event_id="ev-1", metrics={"eval_loss": 0.5}))

    assert again == first
    assert len(registry.versions()) == 1
    assert registry.find_by_event("ev-1") == first
    assert registry.find_by_event("ev-2") is None


def _record_many(path: str, worker: int) -> None:
    registry = ModelRegistry(Path(path))
    for i in range(25):
        registry.record(version(name=f"m{worker}", ver=f"v{i}"))


def test_several_processes_record_into_one_registry_without_losing_versions(tmp_path: Path) -> None:
    path = tmp_path / "models.sqlite3"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_record_many, args=(str(path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)

    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(ModelRegistry(path).versions()) == 75
