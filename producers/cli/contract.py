"""`modelbus publish`, `modelbus schema export`, `modelbus topology declare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from producers.cli.common import console, load_json_arg, settings, user_errors
from producers.publisher import Publisher
from producers.topology import declare_topology
from schemas.envelope import new_event, validate_data
from schemas.events import BY_NAME

schema_app = typer.Typer(help="The event contract as JSON Schema and AsyncAPI.", no_args_is_help=True)
topology_app = typer.Typer(help="Exchanges, queues and dead-letter queues on the broker.", no_args_is_help=True)


def publish(
    event_type: Annotated[str, typer.Argument(help=f"One of: {', '.join(BY_NAME)} (or a routing key).")],
    data: Annotated[str, typer.Option("--data", "-d", help="The event's data as JSON, or @file.json.")],
    correlation_id: Annotated[str | None, typer.Option(help="Correlation id of the workflow.")] = None,
) -> None:
    """Validate an event and publish it (confirmed, mandatory routing). Nothing is sent if it is invalid."""
    cfg = settings()
    payload = load_json_arg(data)
    with user_errors():
        if not isinstance(payload, dict):
            raise ValueError("--data must be a JSON object")
        body = validate_data(event_type, payload, allow_plain_secret_envs=cfg.allow_plain_secret_envs)
        event = new_event(body, source=cfg.source, correlation_id=correlation_id)
        with Publisher(cfg.broker) as publisher:
            publisher.publish(event)
    console.print(f"published [bold]{event.type}[/] id={event.id} correlationid={event.correlationid}", soft_wrap=True)


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="Output folder (created if missing).")],
    markdown: Annotated[Path | None, typer.Option(help="Also write the events reference (Markdown) here.")] = None,
) -> None:
    """Write one JSON Schema per event and an AsyncAPI 3.0 document of the exchange."""
    from schemas.export import events_markdown, export

    written = export(directory)
    if markdown is not None:
        markdown.write_text(events_markdown())
        written.append(markdown)
    for path in written:
        console.print(f"wrote {path}")


@topology_app.command("declare")
def topology_declare() -> None:
    """Declare the events exchange, worker quorum queues, dead-letter exchange and DLQs (idempotent)."""
    with user_errors(), Publisher(settings().broker) as publisher:
        names = declare_topology(publisher.channel)
    console.print(f"declared {len(names)} queues: {', '.join(names)}", soft_wrap=True)
