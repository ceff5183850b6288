"""The exported JSON Schemas and AsyncAPI document describe exactly the messages on the wire."""

from __future__ import annotations

import json

import jsonschema
from typer.testing import CliRunner

from producers.cli import app
from schemas import EVENT_TYPES, encode, new_event
from tests.contract.test_events import SAMPLES


def test_schema_export_writes_one_schema_per_event_and_asyncapi(tmp_path):
    result = CliRunner().invoke(app, ["schema", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for cls in EVENT_TYPES:
        assert (tmp_path / f"{cls.routing_key}.schema.json").exists()
    doc = json.loads((tmp_path / "asyncapi.json").read_text())
    assert doc["asyncapi"] == "3.0.0"


def test_every_sample_event_validates_against_its_exported_schema(tmp_path):
    CliRunner().invoke(app, ["schema", "export", str(tmp_path)])
    for data in SAMPLES:
        schema = json.loads((tmp_path / f"{data.routing_key}.schema.json").read_text())
        jsonschema.validate(json.loads(encode(new_event(data))), schema)


def test_exported_schemas_reject_a_wrong_type_and_unknown_fields(tmp_path):
    CliRunner().invoke(app, ["schema", "export", str(tmp_path)])
    schema = json.loads((tmp_path / "deploy.requested.schema.json").read_text())
    body = json.loads(encode(new_event(SAMPLES[0])))
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors({**body, "type": "io.modelbus.service.ready"}))
    assert errors
    body["data"]["surprise"] = 1
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(body))


def test_asyncapi_document_matches_the_messages(tmp_path):
    CliRunner().invoke(app, ["schema", "export", str(tmp_path)])
    doc = json.loads((tmp_path / "asyncapi.json").read_text())
    channels, messages, schemas = doc["channels"], doc["components"]["messages"], doc["components"]["schemas"]
    assert {c["address"] for c in channels.values()} == {cls.routing_key for cls in EVENT_TYPES}
    for cls in EVENT_TYPES:
        message = messages[cls.__name__]
        assert message["contentType"] == "application/cloudevents+json"
        assert message["bindings"]["amqp"]["messageType"] == cls.event_type()
        assert message["payload"]["$ref"] == f"#/components/schemas/{cls.__name__}Event"
        assert schemas[f"{cls.__name__}Event"]["properties"]["type"]["const"] == cls.event_type()
    # every reference in the document resolves
    refs = []

    def walk(node):
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    for ref in refs:
        target = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
    # the documented payload schema validates a real message
    resolver_doc = {"$defs": schemas, **schemas["DeployRequestedEvent"]}
    text = json.dumps(resolver_doc).replace("#/components/schemas/", "#/$defs/")
    jsonschema.validate(json.loads(encode(new_event(SAMPLES[0]))), json.loads(text))
    assert any(op["action"] == "receive" for op in doc["operations"].values())


def test_the_committed_events_reference_is_up_to_date(tmp_path):
    # docs/ is generated from the models; regenerate with:
    #   modelbus schema export docs/events --markdown docs/events.md
    from pathlib import Path

    from schemas.export import events_markdown, export

    docs = Path(__file__).resolve().parents[2] / "docs"
    assert (docs / "events.md").read_text() == events_markdown()
    for path in export(tmp_path):
        assert (docs / "events" / path.name).read_text() == path.read_text(), f"docs/events/{path.name} is stale"
