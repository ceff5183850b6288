"""A live rich progress bar fed by `BatchStatus` updates (used by `modelbus batch` and `submit_and_wait`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producers.batch.status import BatchStatus

OnProgress = Callable[[BatchStatus], None]


@contextmanager
def live_progress(console: Console, label: str = "batch", *, enabled: bool = True) -> Iterator[OnProgress | None]:
    """Show a bar (done of total, ok/failed, rate, ETA) while the block runs; yields the update callback.

    Yields None when disabled (e.g. output is not a terminal), so callers pass it on unchanged.
    """
    if not enabled:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/] "
                          "{task.fields[rate]:.1f}/s eta {task.fields[eta]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=None, ok=0, failed=0, rate=0.0, eta="?")

        def update(status: BatchStatus) -> None:
            eta = "-" if status.eta_s is None else f"{status.eta_s:.0f}s"
            progress.update(task, total=status.total, completed=status.done + status.cancelled + status.expired,
                            description=f"{label} [{status.state.value}]", ok=status.completed,
                            failed=status.failed, rate=status.rate, eta=eta)

        yield update
