"""The local backend end to end: `modelbus deploy --wait` starts a real model server, undeploy stops it.

A tiny classifier (random weights, real tokenizer) is built at test time; the worker runs in-process
against the real broker and starts `python -m serving` processes, which the tests call over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from producers.cli.main import app as cli
from producers.client import ModelBus, RequestFailed
from schemas.envelope import new_event
from schemas.events import DeployRequested
from schemas.settings import ServingSettings, Settings
from tests.deploy.conftest import deploy_worker, fast_stopping
from tests.models import build_tiny_classifier
from workers.backends.local import LocalBackend
from workers.models_registry import ModelRegistry, ModelVersion
from workers.profiles import load_profiles
from workers.registry import ServiceRegistry

#: The seed's classification request (Open Inference Protocol v2).
SEED_REQUEST = {"inputs": [{"name": "input-0", "shape": [2], "datatype": "BYTES",
                            "data": ["Hello, my dog is cute", "I am feeling sad"]}]}


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("models") / "tiny-sst2")


def local_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "serving": ServingSettings(start_timeout_s=120.0, stop_timeout_s=10.0),
        "broker": fast_stopping(settings.broker),
    })


@pytest.fixture
def local(settings: Settings, clean_deploy_queues: None) -> Iterator[tuple[Settings, LocalBackend]]:
    """A deploy worker with the local backend; every server it started is stopped afterwards."""
    settings = local_settings(settings)
    backend = LocalBackend(settings)
    try:
        with deploy_worker(settings, backend):
            yield settings, backend
    finally:
        for record in backend.running():
            backend.delete(record.service)


def run_cli(settings: Settings, *args: str) -> Any:
    env = {"MODELBUS_BROKER__URL": settings.broker.url, "MODELBUS_STATE_DIR": str(settings.state_dir)}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_modelbus_deploy_wait_serves_the_seeds_classification_request(local, tiny_classifier) -> None:
    settings, backend = local
    # Given a tiny classifier on disk, when `modelbus deploy --wait` is run,
    result = run_cli(settings, "deploy", "tiny-sst2", "--path", tiny_classifier.as_uri(), "--model-name", "tiny",
                     "--task", "sequence_classification", "--profile", "cpu-small", "--wait", "--timeout", "120",
                     "--json")
    assert result.exit_code == 0, result.output
    ready = json.loads(result.output)
    # then the announced v2 URL answers the seed's request like KServe's runtime does,
    reply = httpx.post(ready["endpoints"]["v2_infer"], json=SEED_REQUEST, timeout=30)
    assert reply.status_code == 200, reply.text
    output = reply.json()["outputs"][0]
    assert (output["datatype"], output["shape"]) == ("INT64", [2])
    assert all(label in (0, 1) for label in output["data"])
    assert ready["url"].startswith(f"http://{settings.serving.host}:")

    # and the service registry shows it.
    listed = json.loads(run_cli(settings, "services", "list", "--json").output)
    assert [(s["name"], s["backend"], s["status"], s["url"], s["task"], s["profile"]) for s in listed] == [
        ("tiny-sst2", "local", "ready", ready["url"], "sequence_classification", "cpu-small")]
    pid = backend.read("tiny-sst2").pid

    # When it is undeployed, the server process is stopped and forgotten.
    result = run_cli(settings, "undeploy", "tiny-sst2", "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.output
    assert "deleted tiny-sst2" in result.output
    assert not _running(pid)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{ready['url']}/v2/health/ready", timeout=2)
    assert ServiceRegistry(settings.state_dir).list() == []


def test_a_restarted_worker_adopts_the_server_that_still_runs(settings: Settings, tiny_classifier) -> None:
    settings = local_settings(settings)
    event = new_event(DeployRequested(service="kept", path=tiny_classifier.as_uri(), model_name="kept",
                                      profile="cpu-small"), event_id="adopt-1")
    # Given a server started by a worker process that has since exited,
    script = (
        "import sys; from schemas.settings import Settings; from schemas.envelope import decode;"
        "from workers.backends.local import LocalBackend; from workers.profiles import load_profiles;"
        "event = decode(sys.stdin.read()); backend = LocalBackend(Settings());"
        "backend.apply(event, load_profiles().get_or_fail('cpu-small'), event.data.path)"
    )
    env = {**os.environ, "MODELBUS_STATE_DIR": str(settings.state_dir)}
    subprocess.run([sys.executable, "-c", script], input=event.model_dump_json(), text=True, env=env, check=True,
                   timeout=60)
    restarted = LocalBackend(settings)
    first = restarted.read("kept")
    try:
        assert first is not None
        assert restarted.alive(first)
        # when the restarted worker applies the same request, it adopts the server instead of starting another,
        applied = restarted.apply(event, load_profiles().get_or_fail("cpu-small"), event.data.path)
        assert (applied.created, applied.changed) == (False, False)
        assert restarted.read("kept").pid == first.pid
        assert restarted.follow("kept", window_s=120).state == "ready"
        # and it can stop it.
        assert restarted.delete("kept") is True
        assert not _running(first.pid)
    finally:
        restarted.delete("kept")


def test_a_registered_model_is_served_with_its_secret_in_the_environment_not_the_log(local, tiny_classifier,
                                                                                      bus: ModelBus) -> None:
    settings, backend = local
    ModelRegistry.from_settings(settings).record(ModelVersion(
        "default", "tiny-sst2", "1", base_model="hf://org/base", path=tiny_classifier.as_uri()))
    secret = settings.state_dir / "secrets" / "hf-token" / "token"
    secret.parent.mkdir(parents=True)
    secret.write_text("hf_TestTokenValue1234567890\n")
    service = bus.deploy("with-token", path="store://default/model/tiny-sst2:latest", profile="cpu-small",
                         timeout=120, secret_refs=[{"env": "HF_TOKEN", "secret": "hf-token", "key": "token"}])
    assert service.ready.path == "store://default/model/tiny-sst2"
    record = backend.read("with-token")
    environ = Path(f"/proc/{record.pid}/environ").read_bytes().split(b"\0")
    assert b"HF_TOKEN=hf_TestTokenValue1234567890" in environ
    assert "hf_TestTokenValue1234567890" not in Path(record.log).read_text()
    assert service.ready.backend == "local"


def test_a_missing_secret_is_a_deploy_failure_naming_it(local, tiny_classifier, bus: ModelBus) -> None:
    with pytest.raises(RequestFailed) as err:
        bus.deploy("no-token", path=tiny_classifier.as_uri(), profile="cpu-small", timeout=60,
                   secret_refs=[{"env": "MODELBUS_TEST_ABSENT_TOKEN", "secret": "absent", "key": "token"}])
    assert err.value.reason == "SecretNotFound"
    assert "absent/token" in err.value.event.data.message


def test_a_model_the_server_cannot_load_is_a_deploy_failure_with_its_output(local, tmp_path, bus) -> None:
    settings, backend = local
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(RequestFailed) as err:
        bus.deploy("unloadable", path=empty.as_uri(), profile="cpu-small", timeout=120)
    assert err.value.reason == "ServerExited"
    assert "cannot serve model" in err.value.event.data.message
    assert backend.read("unloadable") is None  # nothing left behind
    assert ServiceRegistry(settings.state_dir).get("unloadable").status == "failed"


def test_an_unknown_profile_is_refused_by_the_cli_with_the_valid_names(local) -> None:
    settings, _ = local
    result = run_cli(settings, "deploy", "typo", "--path", "hf://org/model", "--profile", "gpu", "--wait",
                     "--timeout", "30")
    assert result.exit_code == 1
    assert "UnknownProfile" in result.output
    assert "cpu-small" in result.output


def _running(pid: int) -> bool:
    """Whether `pid` is a live (non-zombie) process, waiting briefly for it to go away."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state == "Z":
            return False
        time.sleep(0.05)
    return True
