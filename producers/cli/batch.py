"""`modelbus batch ...`: submit a JSONL of requests, follow it, collect its results, cancel it, list batches."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from producers.cli.common import console, err_console, fail, settings, user_errors

if TYPE_CHECKING:
    from producers.batch import BatchStatus

batch_app = typer.Typer(help="Batch jobs: a JSONL of requests in, output and error JSONL out.",
                        no_args_is_help=True)

Timeout = Annotated[float | None, typer.Option(help="Give up waiting after this many seconds (exit 2).")]


def _progress(enabled: bool, label: str) -> AbstractContextManager[Callable[[BatchStatus], None] | None]:
    from producers.batch.progress import live_progress

    return live_progress(err_console, label, enabled=enabled)


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_status(status: BatchStatus, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(status.as_dict(), indent=2))
        return
    record = status.record
    table = Table(show_header=False, box=None)
    eta = "-" if status.eta_s is None else f"{status.eta_s:.0f}s"
    rows = [
        ("id", record.id), ("state", status.state.value),
        ("target", record.service or record.url or "-"), ("endpoint", f"{record.endpoint} ({record.protocol.value})"),
        ("total", str(status.total)), ("completed", str(status.completed)), ("failed", str(status.failed)),
        ("awaiting collection", str(status.awaiting_collection)), ("pending", str(status.pending)),
        ("cancelled", str(status.cancelled)), ("expired", str(status.expired)),
        ("rate", f"{status.rate:.1f} req/s"), ("eta", eta),
        ("created", _when(record.created_at)), ("expires", _when(record.expires_at)),
    ]
    if record.metadata:
        rows.append(("metadata", ", ".join(f"{k}={v}" for k, v in record.metadata.items())))
    if record.message:
        rows.append(("message", record.message))
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


@batch_app.command("submit")
def submit(  # noqa: PLR0917 - typer maps each option to a parameter
    file: Annotated[Path, typer.Argument(help="JSONL: OpenAI batch lines {custom_id, method, url, body} or bodies.",
                                         exists=True, dir_okay=False, readable=True)],
    service: Annotated[str | None, typer.Option("--service", "-s", help="Service to call.")] = None,
    url: Annotated[str | None, typer.Option(help="Server base URL to call instead of a service.")] = None,
    endpoint: Annotated[str | None, typer.Option(
        help="Batch endpoint, e.g. /v1/chat/completions or /v2/models/m/infer (default: the first line's url).")
    ] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Leave invalid lines out instead of refusing the file.")] = False,
    completion_window: Annotated[str | None, typer.Option(help="Time to finish before expiring: 24h, 90m, ...")] = None,
    metadata: Annotated[list[str] | None, typer.Option("--metadata", "-m", help="key=value (repeatable).")] = None,
    max_in_flight: Annotated[int | None, typer.Option(help="Requests out without a result at once (0: no bound).")
                             ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the batch to its end with a progress bar.")] = False,
    timeout: Timeout = None,
) -> None:
    """Validate FILE (every line, reported with line numbers), record the batch, print its id, send it.

    Nothing is sent if a line is invalid, unless --skip-invalid. Without --wait the command returns
    once every request is sent; collect with `modelbus batch results ID -o out.jsonl`.
    """
    from producers.batch import Batch, BatchStore
    from producers.batch.submit import Target, create_batch

    if (service is None) == (url is None):
        fail("give exactly one of --service or --url")
    config = settings()
    store = BatchStore(config.state_dir)
    with user_errors():
        record = create_batch(config, store, file, target=Target(service=service, url=url), endpoint=endpoint,
                              completion_window=completion_window, metadata=metadata, skip_invalid=skip_invalid,
                              max_in_flight=max_in_flight)
    typer.echo(record.id)
    if record.skipped:
        err_console.print(f"skipped {record.skipped} invalid line(s) (see `modelbus batch status {record.id}`)")
    batch = Batch(config, record.id, store=store)
    with user_errors(), _progress(wait and err_console.is_terminal, "batch") as update:
        status = batch.wait(timeout=timeout, on_progress=update) if wait else batch.send(timeout=timeout)
    if wait:
        _print_status(status, as_json=False)
    else:
        err_console.print(f"sent {status.sent} of {status.total} request(s); "
                          f"follow with `modelbus batch status {record.id}`")


@batch_app.command("resume")
def resume(
    batch_id: Annotated[str, typer.Argument(help="Batch id.")],
    wait: Annotated[bool, typer.Option(help="Follow the batch to its end with a progress bar.")] = False,
    timeout: Timeout = None,
) -> None:
    """Send the requests of a batch whose submitting process stopped before sending them all."""
    from producers.batch import Batch

    with user_errors(), _progress(wait and err_console.is_terminal, "batch") as update:
        batch = Batch(settings(), batch_id)
        status = batch.wait(timeout=timeout, on_progress=update) if wait else batch.send(timeout=timeout)
    _print_status(status, as_json=False)


@batch_app.command("status")
def status(
    batch_id: Annotated[str, typer.Argument(help="Batch id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts (total, completed, failed, pending), rate and ETA of a batch; collects waiting results."""
    from producers.batch import Batch

    with user_errors():
        found = Batch(settings(), batch_id).status()
    _print_status(found, as_json=as_json)


@batch_app.command("results")
def results(
    batch_id: Annotated[str, typer.Argument(help="Batch id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL (successful requests).")],
    errors: Annotated[Path | None, typer.Option(
        help="Error JSONL (failed, cancelled, expired requests); default <output>.errors.jsonl.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the batch is finished first.")] = False,
    timeout: Timeout = None,
) -> None:
    """Collect a batch's results and write them as JSONL, one line per custom_id (safe to interrupt and rerun)."""
    from producers.batch import Batch
    from producers.batch.handle import default_errors_path

    with user_errors():
        found = Batch(settings(), batch_id).results(output, errors, wait=wait, timeout=timeout)
    errors_path = errors or default_errors_path(output)
    err_console.print(f"{found.completed} result(s) in {output}, "
                      f"{found.failed + found.cancelled + found.expired} error(s) in {errors_path}; "
                      f"batch {found.state.value}" + ("" if found.state.terminal else " (partial results)"))


@batch_app.command("cancel")
def cancel(
    batch_id: Annotated[str, typer.Argument(help="Batch id.")],
    wait: Annotated[bool, typer.Option(help="Wait until the requests already sent have their results.")] = False,
    timeout: Timeout = None,
) -> None:
    """Cancel a batch: nothing more is sent; results of requests already sent are kept."""
    from producers.batch import Batch

    with user_errors():
        found = Batch(settings(), batch_id).cancel(wait=wait, timeout=timeout)
    _print_status(found, as_json=False)


@batch_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The batches of this state directory, newest first."""
    from producers.batch import BatchStore

    store = BatchStore(settings().state_dir)
    records = store.all()
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    table = Table("id", "state", "target", "endpoint", "total", "completed", "failed", "created", "metadata")
    for record in records:
        counts = store.counts(record.id)
        table.add_row(record.id, record.state.value, escape(record.service or record.url or "-"),
                      escape(record.endpoint), str(record.total), str(counts.completed), str(counts.failed),
                      _when(record.created_at), escape(", ".join(f"{k}={v}" for k, v in record.metadata.items())))
    console.print(table)
    if not records:
        err_console.print("no batches yet")
