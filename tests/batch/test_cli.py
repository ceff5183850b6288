"""`modelbus batch ...` as a user types it: refusing an invalid file, following progress, listing."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from producers.cli.main import app
from schemas.settings import Settings
from tests.batch.conftest import Channel, classifier_lines, take_requests, write_jsonl
from tests.batch.test_collection import answer


def env_of(settings: Settings) -> dict[str, str]:
    return {"MODELBUS_BROKER__URL": settings.broker.url, "MODELBUS_STATE_DIR": str(settings.state_dir),
            "MODELBUS_BATCH__POLL_INTERVAL_S": "0.02"}


def test_an_invalid_file_is_refused_with_line_numbers_and_nothing_is_sent(
        batch_settings: Settings, channel: Channel, tmp_path: Path) -> None:
    # Given a file with a broken line, a duplicate custom_id and an unknown endpoint among good lines
    lines = [json.dumps(line) for line in classifier_lines(3)]
    lines.insert(1, '{"custom_id": "x", "body": ')
    lines.append(json.dumps(classifier_lines(1)[0]))
    lines.append(json.dumps({"custom_id": "img", "url": "/v1/images/generations", "body": {}}))
    source = tmp_path / "bad.jsonl"
    source.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    # When it is submitted
    result = runner.invoke(app, ["batch", "submit", str(source), "--service", "classifier"], env=env_of(batch_settings))
    # Then it is refused, each bad line named by its number, and no request went out
    assert result.exit_code == 1
    assert "line 2: invalid_json" in result.stderr
    assert "line 5 (req-0): duplicate_custom_id" in result.stderr
    assert "line 6 (img): invalid_url" in result.stderr
    assert "nothing was submitted" in result.stderr
    assert take_requests(channel) == []
    listed = json.loads(runner.invoke(app, ["batch", "list", "--json"], env=env_of(batch_settings)).stdout)
    assert [(r["state"], [e["line"] for e in r["errors"]]) for r in listed] == [("failed", [2, 5, 6])]


def test_skip_invalid_submits_the_good_lines(batch_settings: Settings, channel: Channel, tmp_path: Path) -> None:
    source = tmp_path / "mixed.jsonl"
    source.write_text("\n".join([json.dumps(classifier_lines(1)[0]), "oops", json.dumps(classifier_lines(2)[1])]))
    result = CliRunner().invoke(app, ["batch", "submit", str(source), "--service", "classifier", "--skip-invalid"],
                                env=env_of(batch_settings))
    assert result.exit_code == 0, result.output
    assert "skipped 1 invalid line" in result.stderr
    assert sorted(r.data.custom_id for r in take_requests(channel)) == ["req-0", "req-1"]


def test_status_reports_counts_rate_and_eta_while_a_batch_runs(
        batch_settings: Settings, channel: Channel, tmp_path: Path) -> None:
    # Given a submitted 40-line batch of which 10 requests are answered
    runner = CliRunner()
    env = env_of(batch_settings)
    source = write_jsonl(tmp_path / "in.jsonl", classifier_lines(40))
    submitted = runner.invoke(app, ["batch", "submit", str(source), "--service", "classifier",
                                    "--metadata", "owner=search", "--completion-window", "2h"], env=env)
    assert submitted.exit_code == 0, submitted.output
    batch_id = submitted.stdout.strip()
    assert "sent 40 of 40" in submitted.stderr
    for request in take_requests(channel, 10):
        answer(channel, request, fail=request.data.custom_id == "req-3")
    # When its status is asked
    shown = runner.invoke(app, ["batch", "status", batch_id, "--json"], env=env)
    # Then it counts what is done and what is pending, with a rate and an ETA
    status = json.loads(shown.stdout)
    assert (status["state"], status["total"], status["completed"], status["failed"], status["pending"]) == (
        "in_progress", 40, 9, 1, 30)
    assert status["rate"] > 0
    assert status["eta_s"] > 0
    record = status["record"]
    assert record["metadata"] == {"owner": "search"}
    assert record["expires_at"] - record["created_at"] == 7200
    human = runner.invoke(app, ["batch", "status", batch_id], env=env)
    assert "in_progress" in human.stdout
    assert "owner=search" in human.stdout


def test_unknown_batches_are_reported_plainly(batch_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["batch", "status", "batch_nope"], env=env_of(batch_settings))
    assert result.exit_code == 1
    assert "no batch 'batch_nope'" in result.stderr
