"""The train worker on the real broker with the local backend: request -> job -> registry -> ModelLogged.

Given a worker running the train and deploy tasks (jobs and model servers as local processes), a user
fine-tunes all-MiniLM-L6-v2 through `ModelBus.train`, sees its progress, gets the logged version, and the
service the request's `deploy` block asked for classifies held-out sentences mostly right. Bad requests
end in TrainFailed with the job's reason and log, and leave no trace in the registry or the store.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from producers.client import ModelBus, RequestFailed
from producers.trained import LoggedModel
from schemas.events import TrainProgress
from schemas.settings import Settings
from tests.models import minilm_dir
from tests.train.data import HELD_OUT, sentiment_rows, write_jsonl
from workers.models_registry import ModelRegistry


def v2_texts(texts: list[str]) -> dict:
    return {"inputs": [{"name": "input-0", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


def test_minilm_fine_tuned_through_the_bus_is_logged_then_served_by_reference(
    bus: ModelBus, worker: Settings, tmp_path: Path
) -> None:
    # Given 200 labelled sentences and the real all-MiniLM-L6-v2
    data = write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(200))
    progress: list[TrainProgress] = []

    # When a user fine-tunes it, asking for the result to be served
    model = bus.train(
        "sentiment", base_model=minilm_dir().as_uri(), dataset=data.as_uri(),
        hyperparameters={"epochs": 2, "max_length": 32, "batch_size": 16, "learning_rate": 1e-4},
        deploy={"service": "sentiment-ft", "model_name": "sentiment"},
        timeout=240, on_progress=progress.append,
    )

    # Then the version is logged with clearly better than chance accuracy, caused by the request
    assert isinstance(model, LoggedModel)
    assert model.metrics["eval_accuracy"] >= 0.8
    assert model.labels == ["negative", "positive"]
    assert model.event.causationid == model.request.id
    assert model.store_uri == f"store://default/model/sentiment:{model.version}"
    assert model.path.endswith(f"/default/model/sentiment/{model.version}/")
    # it resolves through the registry to a complete model folder
    registry = ModelRegistry.from_settings(worker)
    assert registry.resolve(model.store_uri) == model.path
    assert registry.resolve("store://default/model/sentiment:latest") == model.path
    folder = Path(model.path.removeprefix("file://"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_result.json"} <= {
        p.name for p in folder.iterdir()}
    # the user saw the job's progress on the way
    steps = [p.step for p in progress if p.loss is not None]
    assert len(steps) >= 3
    assert steps == sorted(steps)
    assert any("eval_accuracy" in p.metrics for p in progress)

    # And the service deployed by store:// reference classifies held-out sentences mostly right
    service = model.deployment(timeout=180)
    assert service.ready.path == model.store_uri
    reply = httpx.post(f"{service.url}/v2/models/sentiment/infer", json=v2_texts([t for t, _ in HELD_OUT]),
                       timeout=30).json()
    predicted = [model.labels[i] for i in reply["outputs"][0]["data"]]  # type: ignore[index]
    correct = sum(p == label for p, (_, label) in zip(predicted, HELD_OUT, strict=True))
    assert correct >= 8, list(zip(predicted, HELD_OUT, strict=True))
    bus.undeploy("sentiment-ft")


def test_an_unknown_column_fails_with_the_reason_and_log_and_logs_nothing(
    bus: ModelBus, worker: Settings, tiny_base: Path, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(20))

    with pytest.raises(RequestFailed) as failed:
        bus.train("typo", base_model=tiny_base.as_uri(), dataset={"uri": data.as_uri(), "text_column": "review"},
                  timeout=120)

    outcome = failed.value.event
    assert failed.value.reason == "UnknownColumn"
    assert "'review'" in outcome.data.message
    assert "text, label" in outcome.data.message
    assert '"UnknownColumn"' in outcome.data.log_tail
    assert outcome.data.name == "typo"
    assert ModelRegistry.from_settings(worker).versions(name="typo") == []
    assert not (Path(worker.state_dir) / "artifacts" / "default" / "model" / "typo").exists()


def test_an_unknown_profile_fails_before_any_job_starts(bus: ModelBus, worker: Settings, tiny_base: Path) -> None:
    with pytest.raises(RequestFailed) as failed:
        bus.train("gpu-model", base_model=tiny_base.as_uri(), dataset="file:///data/x.csv", profile="8xb200",
                  timeout=60)

    assert failed.value.reason == "UnknownProfile"
    assert "1xa100" in failed.value.event.data.message
    assert not any(p.name.startswith("train-gpu-model-") for p in (Path(worker.state_dir) / "train-runs").iterdir())


CUSTOM = '''
def train(context):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(context.base_model)
    AutoTokenizer.from_pretrained(context.base_model).save_pretrained(context.output_dir)
    model.save_pretrained(context.output_dir)
    context.progress(epoch=1.0, step=1, max_steps=1, loss=0.5)
    context.log_model(metrics={"eval_accuracy": context.parameters["claimed"]}, labels=["no", "yes"])
'''


def test_a_custom_train_module_logs_its_model_through_the_bus_and_can_be_built_upon(
    bus: ModelBus, worker: Settings, tiny_base: Path
) -> None:
    model = bus.train("custom", base_model=tiny_base.as_uri(), code={"source": CUSTOM, "parameters": {"claimed": 0.7}},
                      timeout=120)

    assert isinstance(model, LoggedModel)
    assert model.metrics == {"eval_accuracy": 0.7}
    assert model.labels == ["no", "yes"]
    assert ModelRegistry.from_settings(worker).resolve(model.store_uri) == model.path

    # a logged version is itself a base model, by reference
    again = bus.train("custom-v2", base_model="store://default/model/custom", timeout=120,
                      code={"source": CUSTOM, "parameters": {"claimed": 0.8}})
    assert isinstance(again, LoggedModel)
    assert again.data.base_model == "store://default/model/custom"
    assert again.metrics == {"eval_accuracy": 0.8}
