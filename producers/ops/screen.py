"""The status screen: one report rendered as rich tables (what `modelbus status` prints).

Composition of the pieces in `producers.ops` with the workers' service registry and a Celery
broadcast app; the CLI and the demo both print it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from producers.ops.status import StatusReport, collect
from schemas.settings import Settings


class StatsSource(StrEnum):
    auto = "auto"
    management = "management"
    amqp = "amqp"


def _services(cfg: Settings) -> list[dict[str, Any]]:
    from workers.registry import ServiceRegistry

    if not (cfg.state_dir / ServiceRegistry.FILENAME).exists():
        return []  # reading must not create a registry on a machine that has none
    return [
        {"name": r.name, "status": r.status, "backend": r.backend, "model": r.model_name, "url": r.url,
         "reason": r.reason, "updated_at": r.updated_at}
        for r in ServiceRegistry(cfg.state_dir).list()
    ]


def reporter(cfg: Settings, source: StatsSource) -> tuple[Callable[[], StatusReport], Callable[[], None]]:
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


def age(seconds: float | None) -> str:
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
        running = ", ".join(f"{t['name']}[{str(t['id'])[:8]}] {age(t['running_s'])}" for t in w.tasks[:3])
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
        table.add_row(age(f.age_s(report.generated_at)), f.queue, f.reason, f.event_type or "-",
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


def print_status(settings: Settings, console: Console, source: StatsSource = StatsSource.auto) -> StatusReport:
    """Collect one report and print it; returns the report."""
    report, close = reporter(settings, source)
    try:
        once = report()
    finally:
        close()
    console.print(render(once))
    return once
