"""`modelbus train --wait`, `modelbus models list|show` against a running train worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from producers.cli import app
from schemas.settings import Settings
from tests.train.data import sentiment_rows, write_jsonl


@pytest.fixture
def cli_env(worker: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MODELBUS_BROKER__URL", worker.broker.url)
    monkeypatch.setenv("MODELBUS_STATE_DIR", str(worker.state_dir))
    return worker


def test_train_waits_with_progress_then_models_list_and_show_find_the_version(
    cli_env: Settings, tiny_base: Path, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(40))
    runner = CliRunner()

    trained = runner.invoke(app, [
        "train", "cli-model", "--base-model", tiny_base.as_uri(), "--dataset", data.as_uri(),
        "--labels", "negative,positive", "--epochs", "2", "--max-length", "16", "--lr", "0.001", "--wait",
        "--timeout", "120",
    ])

    assert trained.exit_code == 0, trained.output
    assert "logged store://default/model/cli-model:" in trained.output
    assert "eval_accuracy:" in trained.output
    assert "step " in trained.output  # the progress display showed the job's steps
    listed = runner.invoke(app, ["models", "list", "--name", "cli-model", "--json"])
    assert listed.exit_code == 0, listed.output
    [version] = json.loads(listed.output)
    assert version["labels"] == ["negative", "positive"]
    shown = runner.invoke(app, ["models", "show", "cli-model"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["store_uri"] == version["store_uri"]
    table = runner.invoke(app, ["models", "list"])
    assert "cli-model" in table.output


def test_a_failed_training_prints_the_reason_and_the_job_log(cli_env: Settings, tiny_base: Path,
                                                            tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(10))

    failed = CliRunner().invoke(app, [
        "train", "cli-broken", "--base-model", tiny_base.as_uri(), "--dataset", data.as_uri(),
        "--label-column", "stars", "--wait", "--timeout", "120",
    ])

    assert failed.exit_code == 1
    assert "training failed: UnknownColumn: dataset has no column 'stars'" in failed.output
    assert '"error"' in failed.output  # the job's log tail


def test_show_of_an_unknown_model_is_an_error(cli_env: Settings) -> None:
    shown = CliRunner().invoke(app, ["models", "show", "store://default/model/nothing:v1"])

    assert shown.exit_code == 1
    assert "no model version recorded for store://default/model/nothing:v1" in shown.output
