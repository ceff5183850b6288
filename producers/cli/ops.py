"""`modelbus status` and `modelbus dlq list|replay|purge`: watch the queues, fix what failed.

Thin commands over `producers.ops`; this module decides only how things look (rich tables, or JSON
for scripts) and which exit code a situation deserves.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from producers.cli.common import console, err_console, fail, settings, user_errors
from producers.ops.dlq import DeadLetter, browse, purge, replay
from producers.ops.screen import StatsSource, age, render, reporter
from schemas.topology import WorkerQueue, worker_queue

dlq_app = typer.Typer(help="Dead-letter queues: list, replay, purge.", no_args_is_help=True)


# --------------------------------------------------------------------------------------------- status


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per refresh with --watch).")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
    source: Annotated[StatsSource, typer.Option(help="Where queue statistics come from.")] = StatsSource.auto,
) -> None:
    """Queues (ready, unacked, consumers, rates, dead letters), workers online, services, latest failures.

    Exits 1 when the broker answers neither on the management API nor over AMQP.
    """
    report, close = reporter(settings(), source)
    try:
        if not watch:
            once = report()
            if as_json:
                typer.echo(json.dumps(once.to_dict(), default=str))
            else:
                console.print(render(once))
            if "queues" in once.errors:
                raise typer.Exit(1)
            return
        if as_json:
            while True:
                typer.echo(json.dumps(report().to_dict(), default=str))
                time.sleep(interval)
        with Live(render(report()), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(report()), refresh=True)
    except KeyboardInterrupt:
        return
    finally:
        close()


# ------------------------------------------------------------------------------------------------ dlq

QueueArg = Annotated[str, typer.Argument(help="Worker (deploy, train, invoke), its queue, or its dead-letter queue.")]


def _queue(name: str) -> WorkerQueue:
    try:
        return worker_queue(name)
    except KeyError as exc:
        fail(str(exc).strip("'\""))
        raise  # unreachable: fail() exits


def _letters_table(letters: list[DeadLetter], now: float) -> Table:
    table = Table(title=f"{len(letters)} dead letter(s)", title_justify="left")
    for column in ("event id", "type", "reason", "age", "routing key", "deaths", "replays", "error"):
        table.add_column(column, overflow="fold")
    for d in letters:
        table.add_row(d.key or "-", d.event_type or "-", d.reason, age(d.age_s(now)), d.routing_key or "-",
                      str(d.deaths), str(d.replays), escape(d.error[:200]))
    return table


@dlq_app.command("list")
def dlq_list(
    queue: QueueArg,
    limit: Annotated[int, typer.Option(help="Show at most this many (oldest first).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show dead letters with their reason, type, ids and age; nothing is consumed."""
    target = _queue(queue)
    with user_errors():
        letters = browse(settings().broker, target, limit=limit)
    now = time.time()
    if as_json:
        typer.echo(json.dumps([d.to_dict(now) for d in letters], default=str))
    elif letters:
        console.print(_letters_table(letters, now))
    else:
        console.print(f"{target.dead_letter_queue} is empty")


@dlq_app.command("replay")
def dlq_replay(
    queue: QueueArg,
    ids: Annotated[list[str] | None, typer.Option("--id", help="Replay this event id (repeatable).")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Publish dead letters back to modelbus.events with their original routing key.

    Each is removed from the dead-letter queue only after the broker confirmed its publish, so a
    failure half-way loses nothing. Exits 1 if any selected dead letter could not be replayed.
    """
    if not ids and not replay_all:
        fail("say which dead letters to replay: --id EVENT_ID (repeatable) or --all", code=2)
    if ids and replay_all:
        fail("--id and --all exclude each other", code=2)
    target = _queue(queue)
    with user_errors():
        result = replay(settings().broker, target, ids=None if replay_all else ids)
    for ident in result.replayed:
        console.print(f"replayed {ident}")
    for ident, error in result.failed:
        err_console.print(f"[red]not replayed[/] {escape(ident)}: {escape(error)}")
    for ident in result.not_found:
        err_console.print(f"[red]not found[/] {escape(ident)} in {target.dead_letter_queue}")
    console.print(f"{len(result.replayed)} replayed, {len(result.failed)} failed, {len(result.not_found)} not found")
    if result.failed or result.not_found:
        raise typer.Exit(1)


@dlq_app.command("purge")
def dlq_purge(
    queue: QueueArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Drop every dead letter of a queue (asks first; without a terminal, --yes is required)."""
    target = _queue(queue)
    if not yes:
        try:
            confirmed = typer.confirm(f"Drop every message in {target.dead_letter_queue}?", default=False)
        except typer.Abort:
            fail("not confirmed (no answer); pass --yes to purge without asking")
        if not confirmed:
            fail("not purged")
    with user_errors():
        count = purge(settings().broker, target)
    console.print(f"purged {count} message(s) from {target.dead_letter_queue}")
