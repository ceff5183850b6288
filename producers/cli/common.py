"""Shared CLI plumbing: settings, console, reading JSON arguments, turning errors into exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from producers.errors import PublishError, ReplyTimeout
from schemas.envelope import EventDecodeError, format_validation_error
from schemas.settings import Settings

console = Console()
err_console = Console(stderr=True)


def settings() -> Settings:
    return Settings()


def load_json_arg(value: str) -> Any:
    """Parse `JSON` or `@file.json` (`@-` reads standard input)."""
    try:
        if value.startswith("@"):
            source = value[1:]
            text = typer.get_text_stream("stdin").read() if source == "-" else Path(source).read_text()
        else:
            text = value
        return json.loads(text)
    except OSError as exc:
        fail(f"cannot read {value[1:]}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"not valid JSON: {exc}")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error the way every command does, and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause or fix into a message and exit code 1 (2 for timeouts)."""
    try:
        yield
    except ValidationError as exc:
        fail(f"invalid: {format_validation_error(exc)}")
    except EventDecodeError as exc:
        fail(f"invalid event ({exc.reason}): {exc}")
    except ReplyTimeout as exc:
        fail(str(exc), code=2)
    except (PublishError, KeyError, ValueError) as exc:
        fail(str(exc).strip("'\""))
