"""Export the contract: one JSON Schema per event (whole envelope) and an AsyncAPI 3.0 document.

`modelbus schema export DIR` writes them; docs/events.md is generated from the same data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.envelope import CONTENT_TYPE, CloudEvent
from schemas.events import EVENT_TYPES, Event
from schemas.topology import DEAD_LETTER_EXCHANGE, EXCHANGE, WORKER_QUEUES

ASYNCAPI_VERSION = "3.0.0"


def event_schema(cls: type[Event]) -> dict[str, Any]:
    """JSON Schema (2020-12) of the whole CloudEvent carrying `cls`, with `type` pinned."""
    envelope: Any = CloudEvent[cls]  # type: ignore[valid-type]
    schema: dict[str, Any] = envelope.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://modelbus.io/schemas/{cls.routing_key}.json"
    schema["title"] = cls.__name__
    schema["description"] = (cls.__doc__ or cls.__name__).strip()
    schema["properties"]["type"] = {"type": "string", "const": cls.event_type()}
    schema["required"] = sorted(set(schema.get("required", [])) | {"type", "id", "time", "data", "correlationid"})
    return schema


def _channel_id(routing_key: str) -> str:
    return routing_key.replace(".", "-")


def asyncapi_document() -> dict[str, Any]:
    """An AsyncAPI 3.0 document: the topic exchange, one channel per routing key, one message each."""
    consumers = {key: q for q in WORKER_QUEUES.values() for key in q.routing_keys}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for cls in EVENT_TYPES:
        name, key, cid = cls.__name__, cls.routing_key, _channel_id(cls.routing_key)
        schema = event_schema(cls)
        defs = schema.pop("$defs", {})
        schemas.update(_relink(defs))
        schemas[f"{name}Event"] = _relink(schema)
        messages[name] = {
            "name": name,
            "title": name,
            "summary": (cls.__doc__ or name).strip().splitlines()[0],
            "contentType": CONTENT_TYPE,
            "payload": {"$ref": f"#/components/schemas/{name}Event"},
            "bindings": {"amqp": {"messageType": cls.event_type(), "bindingVersion": "0.3.0"}},
        }
        binding: dict[str, Any] = {
            "is": "routingKey",
            "exchange": {"name": EXCHANGE, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
            "bindingVersion": "0.3.0",
        }
        channels[cid] = {
            "address": key,
            "description": f"Routing key `{key}` on the `{EXCHANGE}` topic exchange.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"amqp": binding},
        }
        operations[f"publish{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"}],
        }
        if key in consumers:
            queue = consumers[key]
            operations[f"consume{name}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{cid}"},
                "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"}],
                "description": f"The {queue.worker} worker consumes quorum queue `{queue.name}`; rejected "
                f"messages go to `{queue.dead_letter_queue}` via `{DEAD_LETTER_EXCHANGE}`.",
            }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "modelbus events",
            "version": "0.1.0",
            "description": "CloudEvents 1.0 (structured JSON) published to the RabbitMQ topic exchange "
            f"`{EXCHANGE}` with routing key = dotted event name.",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {"rabbitmq": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _relink(node: Any) -> Any:
    """Point `#/$defs/X` references at `#/components/schemas/X`."""
    if isinstance(node, dict):
        return {
            k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else _relink(v)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_relink(v) for v in node]
    return node


def export(directory: Path) -> list[Path]:
    """Write `<routing-key>.schema.json` per event and `asyncapi.json`; returns the written paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for cls in EVENT_TYPES:
        path = directory / f"{cls.routing_key}.schema.json"
        path.write_text(json.dumps(event_schema(cls), indent=2) + "\n")
        written.append(path)
    path = directory / "asyncapi.json"
    path.write_text(json.dumps(asyncapi_document(), indent=2) + "\n")
    written.append(path)
    return written


def _field_rows(schema: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    rows = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        rows.append(f"| `{name}` | {_type_name(prop, defs)} | {'yes' if name in required else ''} | "
                    f"{(prop.get('description') or '').replace('|', '/')} |")
    return rows


def _type_name(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        return f"`{prop['$ref'].rsplit('/', 1)[-1]}`"
    if "anyOf" in prop:
        return " or ".join(_type_name(p, defs) for p in prop["anyOf"])
    if "enum" in prop:
        return " / ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type_name(prop.get('items', {}), defs)}"
    return str(kind)


def events_markdown() -> str:
    """The events reference (docs/events.md), generated from the models so it cannot drift."""
    out = [
        "# Events reference",
        "",
        "Generated from `schemas/` by `modelbus schema export --markdown docs/events.md`; do not edit by hand.",
        "",
        f"Every event is a CloudEvents 1.0 structured JSON message (`{CONTENT_TYPE}`) published to the",
        f"topic exchange `{EXCHANGE}` with the routing key in the table. Envelope attributes: `specversion`,",
        "`id`, `source`, `type`, `time`, `subject`, `datacontenttype`, `data`, and the extensions",
        "`correlationid`, `causationid` (the id of the event that caused this one) and `traceparent`.",
        "",
        "| event | routing key | CloudEvents type | consumed by |",
        "|---|---|---|---|",
    ]
    consumers = {key: q.worker for q in WORKER_QUEUES.values() for key in q.routing_keys}
    for cls in EVENT_TYPES:
        out.append(f"| [{cls.__name__}](#{cls.__name__.lower()}) | `{cls.routing_key}` | `{cls.event_type()}` | "
                   f"{consumers.get(cls.routing_key, 'subscribers')} |")
    all_defs: dict[str, Any] = {}
    for cls in EVENT_TYPES:
        schema = cls.model_json_schema()
        defs = schema.pop("$defs", {})
        all_defs.update(defs)
        out += ["", f"## {cls.__name__}", "", (cls.__doc__ or "").strip(), "",
                "| field | type | required | description |", "|---|---|---|---|"]
        out += _field_rows(schema, defs)
    out += ["", "## Shared types"]
    for name, schema in sorted(all_defs.items()):
        if "properties" not in schema:
            continue
        out += ["", f"### {name}", "", (schema.get("description") or "").strip(), "",
                "| field | type | required | description |", "|---|---|---|---|"]
        out += _field_rows(schema, all_defs)
    return "\n".join(line.rstrip() for line in out) + "\n"
