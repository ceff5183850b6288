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
