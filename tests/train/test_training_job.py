"""The training job (`python -m training SPEC.json`) as a process, the way both backends run it.

A real fine-tune of all-MiniLM-L6-v2 learns held-out sentiment; token classification, causal LM, S3
inputs/outputs and a user's `train(context)` module produce model folders the same way; bad specs fail
with a clear reason and leave nothing in the artefact store.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.models import build_tiny_classifier, build_tiny_generator, build_tiny_token_classifier, minilm_dir
from tests.train.conftest import S3
from tests.train.data import HELD_OUT, job_spec, run_job, sentiment_rows, tagged_rows, write_jsonl
from training.spec import RESULT_FILE


def classify(model_dir: Path, texts: list[str]) -> list[str]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    return [model.config.id2label[int(i)] for i in logits.argmax(-1)]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny-classifier"))


def test_minilm_fine_tuned_on_a_csv_with_mapped_columns_classifies_held_out_sentences(tmp_path: Path) -> None:
    # Given a CSV whose columns are not called text/label, and a sample limit below its size
    data = tmp_path / "reviews.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment", "id"])
        writer.writerows((r["text"], r["label"], i) for i, r in enumerate(sentiment_rows(220)))
    out = tmp_path / "artifacts" / "default" / "model" / "sentiment" / "v1"
    request = {
        "name": "sentiment", "base_model": minilm_dir().as_uri(),
        "dataset": {"uri": data.as_uri(), "text_column": "review", "label_column": "sentiment", "max_samples": 200},
        "hyperparameters": {"epochs": 2, "max_length": 32, "batch_size": 16, "learning_rate": 1e-4},
    }

    # When the job runs
    job = run_job(job_spec(request, out.as_uri() + "/"), tmp_path / "spec.json")

    # Then it reports progress, then a result with clearly better than chance accuracy
    assert job.returncode == 0, job.output
    assert job.result is not None
    assert job.result["metrics"]["eval_accuracy"] >= 0.8
    assert "eval_f1" in job.result["metrics"]
    assert "eval_loss" in job.result["metrics"]
    assert job.result["labels"] == ["negative", "positive"]
    steps = [p.step for p in job.progress if p.loss is not None]
    assert steps == sorted(steps)
    assert len(steps) >= 5
    assert job.progress[-1].epoch == pytest.approx(2.0)
    # and the model folder holds a loadable classifier that gets held-out sentences mostly right
    assert json.loads((out / RESULT_FILE).read_text())["metrics"] == job.result["metrics"]
    predicted = classify(out, [text for text, _ in HELD_OUT])
    correct = sum(p == label for p, (_, label) in zip(predicted, HELD_OUT, strict=True))
    assert correct >= 8, list(zip(predicted, HELD_OUT, strict=True))


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        ({"dataset": {"text_column": "sentence"}}, "UnknownColumn", ["sentence", "text, label"]),
        ({"base_model": "file:///nonexistent/model"}, "UnknownBaseModel", ["/nonexistent/model"]),
        ({"hyperparameters": {"max_length": 4096}}, "InvalidHyperParameter", ["max_length 4096", "128"]),
        ({"hyperparameters": {"eval_strategy": "epoch"}, "dataset": {"eval_fraction": 0.0}},
         "InvalidHyperParameter", ["eval_fraction"]),
        ({"dataset": {"uri": "file:///nonexistent/data.csv"}}, "DatasetNotFound", ["/nonexistent/data.csv"]),
        ({"dataset": {"uri": "hf://modelbus-tests/no-such-dataset"}}, "DatasetNotFound", ["no-such-dataset"]),
    ],
    ids=["unknown-column", "unknown-base-model", "max-length-beyond-model", "eval-without-data", "missing-file",
         "hub-dataset-unreachable"],
)
def test_a_bad_spec_fails_with_a_clear_reason_and_writes_nothing(
    tmp_path: Path, tiny_classifier: Path, change: dict, reason: str, words: list[str]
) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", sentiment_rows(20))
    request: dict = {"name": "broken", "base_model": tiny_classifier.as_uri(), "dataset": {"uri": data.as_uri()},
                     "hyperparameters": {"epochs": 1, "max_length": 32}}
    for key, value in change.items():
        request[key] = {**request[key], **value} if isinstance(value, dict) else value
    root = tmp_path / "artifacts"
    spec = job_spec(request, (root / "default/model/broken/v1").as_uri() + "/")

    job = run_job(spec, tmp_path / "spec.json", env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})

    assert job.returncode == 2, job.output
    assert job.error is not None, job.output
    assert job.error.reason == reason, job.output
    for word in words:
        assert word in job.error.message
    assert job.result is None
    assert not root.exists()


def test_token_classification_learns_tags_from_jsonl_word_lists(tmp_path: Path) -> None:
    base = build_tiny_token_classifier(tmp_path / "base", num_labels=3)
    data = write_jsonl(tmp_path / "ner.jsonl", tagged_rows(60))
    out = tmp_path / "out"
    request = {"name": "ner", "base_model": base.as_uri(), "task": "token_classification",
               "dataset": {"uri": data.as_uri(), "text_column": "tokens", "label_column": "tags"},
               "hyperparameters": {"epochs": 3, "max_length": 16, "learning_rate": 5e-3, "batch_size": 8}}

    job = run_job(job_spec(request, out.as_uri() + "/"), tmp_path / "spec.json")

    assert job.returncode == 0, job.output
    assert job.result is not None
    assert job.result["task"] == "token_classification"
    assert job.result["labels"] == ["LOC", "O", "PER"]
    assert job.result["metrics"]["eval_accuracy"] > 0.6
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "LOC", "1": "O", "2": "PER"}


def test_a_causal_lm_is_fine_tuned_on_a_text_column_and_reports_perplexity(tmp_path: Path) -> None:
    base = build_tiny_generator(tmp_path / "base")
    data = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "the capital of France is Paris."}] * 40)
    out = tmp_path / "out"
    request = {"name": "writer", "base_model": base.as_uri(), "task": "text_generation",
               "dataset": {"uri": data.as_uri()},
               "hyperparameters": {"epochs": 2, "max_length": 32, "learning_rate": 1e-2, "batch_size": 8}}

    job = run_job(job_spec(request, out.as_uri() + "/"), tmp_path / "spec.json")

    assert job.returncode == 0, job.output
    assert job.result is not None
    metrics = job.result["metrics"]
    assert metrics["eval_perplexity"] > 1.0
    assert metrics["train_loss"] > metrics["eval_loss"]  # it learned the one sentence
    assert (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file()


def test_datasets_base_models_and_outputs_can_all_live_on_s3(tmp_path: Path, tiny_classifier: Path, s3: S3) -> None:
    client = s3.client()
    pd.DataFrame(sentiment_rows(40)).to_parquet(tmp_path / "train.parquet")
    client.upload_file(str(tmp_path / "train.parquet"), s3.bucket, "datasets/reviews/part-0.parquet")
    for path in tiny_classifier.iterdir():
        client.upload_file(str(path), s3.bucket, f"bases/tiny/{path.name}")
    output = f"s3://{s3.bucket}/artifacts/default/model/reviews/v1/"
    request = {"name": "reviews", "base_model": f"s3://{s3.bucket}/bases/tiny/",
               "dataset": {"uri": f"s3://{s3.bucket}/datasets/reviews/"},
               "hyperparameters": {"epochs": 1, "max_length": 16}}

    job = run_job(job_spec(request, output, s3_endpoint_url=s3.endpoint_url), tmp_path / "spec.json")

    assert job.returncode == 0, job.output
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket, Prefix="artifacts/")["Contents"]}
    prefix = "artifacts/default/model/reviews/v1/"
    assert {prefix + "config.json", prefix + "model.safetensors", prefix + "tokenizer.json",
            prefix + RESULT_FILE} <= keys
    body = client.get_object(Bucket=s3.bucket, Key=prefix + RESULT_FILE)["Body"].read()
    assert json.loads(body)["path"] == output


def build_wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel, so installing a requirement needs no network."""
    wheel = directory / "modelbus_test_helper-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("modelbus_test_helper/__init__.py", "def bonus():\n    return 0.25\n")
        info = "modelbus_test_helper-1.0.dist-info"
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: modelbus-test-helper\nVersion: 1.0\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


USER_MODULE = '''
from pathlib import Path

import modelbus_test_helper
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def fit(context):
    splits = context.load_dataset()
    assert context.parameters == {"note": "custom"}
    model = AutoModelForSequenceClassification.from_pretrained(context.base_model)
    tokenizer = AutoTokenizer.from_pretrained(context.base_model)
    for step in range(1, 4):
        context.progress(epoch=step / 3, step=step, max_steps=3, loss=1.0 / step)
    target = Path(context.work_dir) / "saved"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    context.log_metric("train_rows", len(splits.train))
    context.log_model(name="custom", kind="huggingface", source=str(target),
                      metrics={"eval_accuracy": 0.5 + modelbus_test_helper.bonus()}, labels=["neg", "pos"])
'''


def test_a_custom_train_function_with_requirements_logs_its_model(tmp_path: Path, tiny_classifier: Path) -> None:
    wheel = build_wheel(tmp_path)
    data = write_jsonl(tmp_path / "data.jsonl", sentiment_rows(30))
    code = tmp_path / "train_model.py"
    code.write_text(USER_MODULE)
    out = tmp_path / "out"
    request = {"name": "custom", "base_model": tiny_classifier.as_uri(), "dataset": {"uri": data.as_uri()},
               "code": {"uri": code.as_uri(), "handler": "fit", "requirements": [str(wheel), "numpy>=1.20"],
                        "parameters": {"note": "custom"}}}

    job = run_job(job_spec(request, out.as_uri() + "/", work_dir=str(tmp_path / "work")), tmp_path / "spec.json")

    assert job.returncode == 0, job.output
    assert job.result is not None
    assert job.result["custom"] is True
    assert job.result["metrics"] == {"train_rows": 24.0, "eval_accuracy": 0.75}
    assert job.result["labels"] == ["neg", "pos"]
    assert [p.step for p in job.progress] == [1, 2, 3]
    assert (out / "model.safetensors").is_file()
    # the requirement went into the job's own directory, not into the environment running it
    assert (tmp_path / "work" / "site-packages" / "modelbus_test_helper").is_dir()


@pytest.mark.parametrize(
    ("source", "reason", "words"),
    [
        ("def train(context):\n    raise RuntimeError('out of ideas')\n", "CustomCodeFailed", ["out of ideas"]),
        ("def train(context):\n    return {'eval_accuracy': 1.0}\n", "NoModelLogged", ["log_model"]),
        ("def something_else(context):\n    pass\n", "CustomCodeFailed", ["'train'"]),
    ],
    ids=["handler-raises", "nothing-logged", "no-handler"],
)
def test_a_failing_custom_module_reports_why_and_writes_nothing(
    tmp_path: Path, tiny_classifier: Path, source: str, reason: str, words: list[str]
) -> None:
    out = tmp_path / "out"
    request = {"name": "custom", "base_model": tiny_classifier.as_uri(), "code": {"source": source}}

    job = run_job(job_spec(request, out.as_uri() + "/"), tmp_path / "spec.json")

    assert job.returncode != 0
    assert job.error is not None, job.output
    assert job.error.reason == reason, job.output
    for word in words:
        assert word in job.error.message
    assert not out.exists()
