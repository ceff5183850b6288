"""Every event survives model -> JSON -> model unchanged, and the one decoder tells bad input apart."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from schemas import (
    EVENT_TYPES,
    DeployFailed,
    DeployRequested,
    EventDecodeError,
    InvokeCompleted,
    InvokeFailed,
    InvokeRequested,
    ModelLogged,
    ServiceDeleted,
    ServiceReady,
    TrainFailed,
    TrainProgress,
    TrainRequested,
    UndeployRequested,
    amqp_properties,
    decode,
    derived_id,
    encode,
    new_event,
)

SEED_V2 = {"inputs": [{"name": "input-0", "shape": [2], "datatype": "BYTES",
                       "data": ["Hello, my dog is cute", "I am feeling sad"]}]}
SAMPLES = [
    DeployRequested(service="sentiment", path="huggingface://distilbert/distilbert-base-uncased-finetuned-sst-2-english",
                    model_name="sentiment", task="sequence_classification", profile="1xa100"),
    DeployRequested(service="llama3", path="huggingface://meta-llama/meta-llama-3-8b-instruct",
                    task="text_generation", backend="vllm", profile="1xa100",
                    secret_refs=[{"env": "HF_TOKEN", "secret": "hf-token", "key": "token"}],
                    runtime={"max_model_len": 4096, "dtype": "bfloat16"}),
    DeployRequested(service="finetuned", path=f"s3://datalake/llm/model/test_llm_model/{uuid.uuid4()}/",
                    profile="1xa100", deadline=datetime(2030, 1, 1, tzinfo=UTC)),
    ServiceReady(service="sentiment", model_name="sentiment", backend="local", path="file:///m",
                 url="http://127.0.0.1:9000", task="sequence_classification",
                 endpoints={"v2_infer": "http://127.0.0.1:9000/v2/models/sentiment/infer"}),
    DeployFailed(service="sentiment", reason="UnknownProfile", message="no profile 'x'",
                 details={"valid": ["1xa100"]}),
    UndeployRequested(service="sentiment"),
    ServiceDeleted(service="sentiment", backend="kserve", existed=True),
    TrainRequested(name="sentiment-ft", base_model="file:///models/minilm",
                   dataset={"uri": "file:///data/reviews.csv", "label_column": "stars"},
                   labels=["negative", "positive"], hyperparameters={"epochs": 2, "learning_rate": 3e-5},
                   deploy={"service": "sentiment-ft"}),
    TrainRequested(name="custom", base_model="hf://org/base", code={"source": "def train(context): ...",
                                                                      "requirements": ["evaluate"]}),
    ModelLogged(project="default", name="sentiment-ft", version="1f2e", path="file:///a/b",
                store_uri="store://default/model/sentiment-ft:1f2e", base_model="file:///models/minilm",
                metrics={"eval_accuracy": 0.93}, created=datetime.now(UTC)),
    TrainFailed(project="default", name="x", reason="UnknownColumn", message="no column 'txt'", log_tail="..."),
    TrainProgress(project="default", name="sentiment-ft", run_id="train-sentiment-ft-1a2b3c4d", epoch=1.5, step=15,
                  max_steps=20, loss=0.41, metrics={"eval_accuracy": 0.9}),
    InvokeRequested(service="sentiment", protocol="v2", body=SEED_V2),
    InvokeRequested(url="http://10.0.0.1:8080", protocol="openai.chat",
                    body={"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}),
    InvokeCompleted(request_id="r1", service="sentiment", protocol="v2", body={"outputs": []}, latency_ms=3.2,
                    batch_size=8),
    InvokeFailed(request_id="r1", service="sentiment", protocol="v2", reason="UpstreamError", message="500",
                 status_code=500, attempts=4),
]


def test_samples_cover_every_event_type():
    assert {type(s) for s in SAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: type(d).__name__)
def test_every_event_round_trips_through_json(data):
    event = new_event(data, source="/tests")
    decoded = decode(encode(event))
    assert decoded == event
    assert type(decoded.data) is type(data)
    assert json.loads(encode(decoded)) == json.loads(encode(event))


def test_the_envelope_is_a_structured_cloudevent_with_modelbus_extensions():
    cause = new_event(DeployRequested(service="sentiment", path="hf://org/m"),
                      traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    ready = new_event(ServiceReady(service="sentiment", model_name="model", backend="local", path="hf://org/m",
                                   url="http://x", endpoints={}), cause=cause)
    body = json.loads(encode(ready))
    assert body["specversion"] == "1.0"
    assert body["type"] == "io.modelbus.service.ready"
    assert body["datacontenttype"] == "application/json"
    assert body["subject"] == "sentiment"
    assert body["correlationid"] == cause.correlationid == cause.id
    assert body["causationid"] == cause.id
    assert body["traceparent"] == cause.traceparent


def test_amqp_properties_mirror_the_envelope():
    event = new_event(UndeployRequested(service="sentiment"))
    props = amqp_properties(event)
    assert props["message_id"] == event.id
    assert props["correlation_id"] == event.correlationid
    assert props["type"] == "io.modelbus.undeploy.requested"
    assert props["content_type"] == "application/cloudevents+json"
    assert props["delivery_mode"] == 2


def test_derived_ids_are_stable_per_cause_and_purpose():
    assert derived_id("abc", "result") == derived_id("abc", "result")
    assert derived_id("abc", "result") != derived_id("abd", "result")
    assert derived_id("abc", "result") != derived_id("abc", "failed")


def _valid() -> dict:
    return json.loads(encode(new_event(UndeployRequested(service="sentiment"))))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json at all", "NotJSON"),
        (b"[1, 2]", "NotAnObject"),
        (json.dumps({**_valid(), "type": "io.modelbus.nope"}).encode(), "UnknownType"),
        (json.dumps({**_valid(), "data": {"service": "Bad Name"}}).encode(), "SchemaViolation"),
        (json.dumps({**_valid(), "data": {"service": "ok", "extra": 1}}).encode(), "SchemaViolation"),
        (json.dumps({**_valid(), "specversion": "0.3"}).encode(), "SchemaViolation"),
        (json.dumps({**_valid(), "type": "io.modelbus.deploy.requested"}).encode(), "SchemaViolation"),
        (b"{" + b" " * 2_000_000 + b"}", "TooLarge"),
    ],
)
def test_the_decoder_names_what_is_wrong(raw, reason):
    with pytest.raises(EventDecodeError) as info:
        decode(raw)
    assert info.value.reason == reason
    assert str(info.value)


def test_schema_violations_point_at_the_field():
    raw = json.dumps({**_valid(), "data": {"service": "Bad Name"}})
    with pytest.raises(EventDecodeError, match=r"data\.service"):
        decode(raw)


def test_events_are_immutable():
    data = UndeployRequested(service="sentiment")
    with pytest.raises(ValueError, match="frozen"):
        data.service = "other"


def test_invoke_needs_exactly_one_target():
    with pytest.raises(ValueError, match="exactly one of 'service' or 'url'"):
        InvokeRequested(body={})
    with pytest.raises(ValueError, match="exactly one of 'service' or 'url'"):
        InvokeRequested(service="a", url="http://x", body={})


def test_training_needs_a_dataset_or_custom_code():
    with pytest.raises(ValueError, match="dataset"):
        TrainRequested(name="x", base_model="hf://org/m")
