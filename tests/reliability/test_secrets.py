"""A Hugging Face token given by reference reaches the model server and nothing else.

Given a deploy worker (local backend, debug logging, metrics on) holding an HF token in its
environment and another in its secrets directory, when services are deployed with `secret_refs`
(successfully, with a model that fails to load, with a secret that does not exist) and a request
carries a token as a plain env, then the token values are in the model servers' environments and
nowhere else: not in any event on the exchange, not in the worker's or the servers' logs, not in
dead-letter headers, not in the metrics, not in the state directory, not in any error message.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterator
from pathlib import Path

import httpx
import pika
import psutil
import pytest
from pydantic import ValidationError

from producers import Publisher
from schemas.envelope import CONTENT_TYPE, encode, new_event
from schemas.events import DeployFailed, DeployRequested, ServiceReady, UndeployRequested
from schemas.topology import DEPLOY_QUEUE, ERROR_HEADER, REASON_HEADER
from schemas.types import EnvVar, SecretRef
from tests.invoke.upstream_app import free_port
from tests.models import build_tiny_classifier
from tests.reliability.harness import EventTap, WorkerProcess, event_tap, read_all, wait_for


def _token() -> str:
    return "hf_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(34))


TOKEN_IN_ENV, TOKEN_IN_FILE, TOKEN_IN_CLEAR = _token(), _token(), _token()
ALL_TOKENS = (TOKEN_IN_ENV, TOKEN_IN_FILE, TOKEN_IN_CLEAR)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("secret-models") / "classifier")


@pytest.fixture
def worker(settings, clean_queues, classifier_dir, tmp_path) -> Iterator[WorkerProcess]:
    secret_file = Path(settings.state_dir) / "secrets" / "hub-token" / "token"
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text(TOKEN_IN_FILE + "\n")
    env = {"HF_TOKEN": TOKEN_IN_ENV, "MODELBUS_LOG_LEVEL": "DEBUG", "MODELBUS_SERVING__START_TIMEOUT_S": "120"}
    with WorkerProcess("deploy", settings, tmp_path / "logs", env=env, metrics_port=free_port()).start() as worker:
        yield worker
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(classifier_dir) in arg for arg in proc.info.get("cmdline") or []):
            proc.kill()


def _deploy(service: str, path: str, reply_to: str, ref: SecretRef) -> DeployRequested:
    return DeployRequested(service=service, path=path, task="sequence_classification", reply_to=reply_to,
                           secret_refs=[ref], envs=[EnvVar(name="LOG_LEVEL", value="debug")])


def _server_environ(url: str) -> dict[str, str]:
    port = url.rsplit(":", 1)[1]
    for proc in psutil.process_iter(["cmdline"]):
        if f"--http_port={port}" in (proc.info.get("cmdline") or []):
            return proc.environ()
    raise AssertionError(f"no server process listens on {url}")


def _outcome(replies: EventTap, request_id: str):
    (found,) = [e for e in replies.events() if e.causationid == request_id]
    return found.data


def test_a_token_by_reference_reaches_the_server_and_appears_nowhere_else(
    settings, broker_url, worker, classifier_dir, channel, tmp_path,
) -> None:
    hub, absent = SecretRef(env="HF_TOKEN", secret="hub-token", key="token"), \
        SecretRef(env="HF_TOKEN", secret="not-a-file", key="token")
    with event_tap(broker_url) as everything, event_tap(broker_url, bindings=()) as replies:
        model = classifier_dir.as_uri()
        requests = {
            "from-file": new_event(_deploy("from-file", model, replies.queue, hub)),
            "from-env": new_event(_deploy("from-env", model, replies.queue, absent)),
            "bad-model": new_event(_deploy("bad-model", "file:///no/such/model", replies.queue, hub)),
            "no-secret": new_event(_deploy("no-secret", model, replies.queue,
                                           SecretRef(env="OTHER_TOKEN", secret="nowhere", key="token"))),
        }
        # What a producer in another language could send: the token as a plain env.
        clear = json.loads(encode(new_event(UndeployRequested(service="in-clear"))))
        clear.update(type=DeployRequested.event_type(),
                     data={"service": "in-clear", "path": model,
                           "envs": [{"name": "HF_TOKEN", "value": TOKEN_IN_CLEAR}]})
        clear = json.dumps(clear).encode()
        with Publisher(settings.broker) as publisher:
            for event in requests.values():
                publisher.publish(event)
            publisher.publish_raw(clear, routing_key="deploy.requested",
                                  properties=pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=2))
        replies.wait(lambda tap: len(tap.messages) >= len(requests), timeout=180, what="every deploy to end")
        outcomes = {name: _outcome(replies, event.id) for name, event in requests.items()}

        # The token was delivered where it is needed...
        assert isinstance(outcomes["from-file"], ServiceReady)
        assert isinstance(outcomes["from-env"], ServiceReady)
        assert _server_environ(outcomes["from-file"].url)["HF_TOKEN"] == TOKEN_IN_FILE
        assert _server_environ(outcomes["from-env"].url)["HF_TOKEN"] == TOKEN_IN_ENV
        # ...failures say why without it...
        assert isinstance(outcomes["bad-model"], DeployFailed)
        assert isinstance(outcomes["no-secret"], DeployFailed)
        assert outcomes["no-secret"].reason == "SecretNotFound"
        assert "nowhere/token" in outcomes["no-secret"].message
        # ...and a token in clear never gets in.
        wait_for(lambda: channel.queue_declare(DEPLOY_QUEUE.dead_letter_queue, passive=True).method.message_count,
                 timeout=30, what="the plain token to be dead-lettered")
        (letter,) = read_all(channel, DEPLOY_QUEUE.dead_letter_queue)
        assert letter[0].headers[REASON_HEADER] == "SchemaViolation"
        assert "secret reference" in letter[0].headers[ERROR_HEADER]
        dead_letter_headers = str(letter[0].headers)

        metrics = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=10).text
        assert "modelbus_events_consumed_total" in metrics
        with Publisher(settings.broker) as publisher:
            for name in ("from-file", "from-env"):
                publisher.publish(new_event(UndeployRequested(service=name, reply_to=replies.queue)))
        replies.wait(lambda tap: len(tap.messages) >= len(requests) + 2, timeout=60, what="the undeploys")
        everything.poll(0.5)
        events = [body for _, body in everything.messages if body != clear]  # but the producer's own mistake
        errors = [o.message for o in outcomes.values() if isinstance(o, DeployFailed)]

    worker.stop()
    state_files = [p for p in Path(settings.state_dir).rglob("*") if p.is_file() and "secrets" not in p.parts]
    server_logs = [p for p in state_files if p.suffix == ".log"]
    assert server_logs, "the model servers wrote no logs to check"
    assert "from-file" in worker.log(), "the worker log was not captured"
    places = {
        "events on the exchange": b"\n".join(events).decode(errors="replace"),
        "worker log": worker.log(),
        "dead-letter headers": dead_letter_headers,
        "metrics": metrics,
        "error messages": "\n".join(errors),
        **{f"state file {p.name}": p.read_bytes().decode(errors="replace") for p in state_files},
    }
    assert len(events) >= len(requests) * 2
    for where, text in places.items():
        for token in ALL_TOKENS:
            assert token not in text, f"a token leaked into the {where}"


def test_a_plain_env_that_looks_like_a_secret_is_refused_without_echoing_its_value() -> None:
    with pytest.raises(ValidationError) as refused:
        DeployRequested(service="in-clear", path="hf://org/model",
                        envs=[EnvVar(name="HUGGING_FACE_HUB_TOKEN", value=TOKEN_IN_CLEAR)])
    assert "secret reference" in str(refused.value)
    assert TOKEN_IN_CLEAR not in str(refused.value)
