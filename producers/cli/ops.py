"""`modelbus status` and `modelbus dlq list|replay|purge`: watch the queues, fix what failed.

Thin commands over `producers.ops`; this module decides only how things look (rich tables, or JSON
for scripts) and which exit code a situation deserves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from producers.cli.common import console, err_console, fail, settings, user_errors
from producers.ops.dlq import DeadLetter, browse, purge, replay
from producers.ops.status import StatusReport, collect
from schemas.settings import Settings
from schemas.topology import WorkerQueue, worker_queue

dlq_app = typer.Typer(help="Dead-letter queues: list, replay, purge.", no_args_is_help=True)


class StatsSource(StrEnum):
    auto = "auto"
    management = "management"
    amqp = "amqp"


# --------------------------------------------------------------------------------------------- status


def _services(cfg: Settings) -> list[dict[str, Any]]:
    from workers.registry import ServiceRegistry

    if not (cfg.state_dir / ServiceRegistry.FILENAME).exists():
        return []  # reading must not create a registry on a machine that has none
    return [
        {"name": r.name, "status": r.status, "backend": r.backend, "model": r.model_name, "url": r.url,
         "reason": r.reason, "updated_at": r.updated_at}
        for r in ServiceRegistry(cfg.state_dir).list()
    ]


def _reporter(cfg: Settings, source: StatsSource) -> tuple[Callable[[], StatusReport], Callable[[], None]]:
    """A function making one status report (sharing one broadcast app across refreshes), and a closer."""
    from producers.ops.celery_workers import celery_workers, inspect_app
    from workers.app import broker_ssl

    app = inspect_app(cfg.broker.url, use_ssl=broker_ssl(cfg.broker))
    prefer = None if source is StatsSource.auto else source.value

    def report() -> StatusReport:
        return collect(cfg.broker, inspect=lambda: celery_workers(app), services=lambda: _services(cfg),
                       prefer=prefer)  # type: ignore[arg-type]

    return report, app.close


def _num(value: float | None, fmt: str = "{:d}") -> str:
    return "-" if value is None else fmt.format(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _queues_table(report: StatusReport) -> Table:
    table = Table(title=f"Queues (from {report.source or 'nowhere'})", title_justify="left")
    for column in ("queue", "kind", "ready", "unacked", "consumers", "in/s", "out/s", "dead letters"):
        table.add_column(column, justify="left" if column in ("queue", "kind") else "right",
                         no_wrap=column == "queue")
    for q in report.queues:
        if q.kind == "dead-letter":
            continue  # shown as the "dead letters" column of its worker's event queue
        dead = report.dead_letters(q.worker) if q.kind == "events" else None
        table.add_row(
            q.name + ("" if q.exists else " (missing)"), q.kind, str(q.ready), _num(q.unacked), str(q.consumers),
            _num(q.publish_rate, "{:.1f}"), _num(q.deliver_rate, "{:.1f}"),
            Text(str(dead), style="bold red") if dead else _num(dead),
        )
    return table


def _workers_table(report: StatusReport) -> Table | Text:
    if not report.workers:
        return Text("Workers online: none answered", style="yellow")
    table = Table(title="Workers online", title_justify="left")
    for column in ("worker", "name", "seen by", "in flight", "running"):
        table.add_column(column)
    for w in report.workers:
        running = ", ".join(f"{t['name']}[{str(t['id'])[:8]}] {_age(t['running_s'])}" for t in w.tasks[:3])
        table.add_row(w.worker, w.name, "celery inspect" if w.kind == "celery" else "queue consumers",
                      str(w.in_flight) if w.kind == "celery" else "-", running)
    return table


def _services_table(report: StatusReport) -> Table:
    table = Table(title="Services", title_justify="left")
    for column in ("service", "status", "backend", "model", "url / reason"):
        table.add_column(column)
    for s in report.services:
        style = {"ready": "green", "failed": "red"}.get(s["status"], "yellow")
        table.add_row(s["name"], Text(s["status"], style=style), s["backend"], s["model"],
                      s["url"] if s["status"] == "ready" else (s.get("reason") or ""))
    return table


def _failures_table(report: StatusReport) -> Table:
    table = Table(title="Latest failures (dead letters)", title_justify="left")
    for column in ("age", "queue", "reason", "type", "event id", "error"):
        table.add_column(column, overflow="fold")
    for f in report.failures:
        table.add_row(_age(f.age_s(report.generated_at)), f.queue, f.reason, f.event_type or "-",
                      f.key or "-", escape(f.error[:120]))
    return table


def render(report: StatusReport) -> Group:
    """The status screen as rich renderables."""
    parts: list[Any] = [_queues_table(report), _workers_table(report)]
    if report.services:
        parts.append(_services_table(report))
    if report.failures:
        parts.append(_failures_table(report))
    parts += [Text(f"note: {note}", style="yellow") for note in report.notes]
    parts += [Text(f"{part}: {error}", style="bold red") for part, error in report.errors.items()]
    return Group(*parts)


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per refresh with --watch).")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
    source: Annotated[StatsSource, typer.Option(help="Where queue statistics come from.")] = StatsSource.auto,
) -> None:
    """Queues (ready, unacked, consumers, rates, dead letters), workers online, services, latest failures.

    Exits 1 when the broker answers neither on the management API nor over AMQP.
    """
    report, close = _reporter(settings(), source)
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
        table.add_row(d.key or "-", d.event_type or "-", d.reason, _age(d.age_s(now)), d.routing_key or "-",
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
