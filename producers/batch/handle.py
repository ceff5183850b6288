"""The synchronous face of batch jobs: `submit_batch` and the `Batch` handle (what `bus.batch(...)` returns).

Each call runs the asynchronous batch loop (`runner.drive`) to the point it needs, so a `Batch`
holds no connection between calls and can be re-opened by id from another process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from producers.batch.collect import snapshot
from producers.batch.runner import OnProgress, Until, drive
from producers.batch.status import BatchStatus
from producers.batch.store import BatchRecord, BatchStore
from producers.batch.submit import Target, create_batch
from schemas.settings import Settings

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Batch:
    """A batch job: its id, status, results and cancel.

    Example:
        >>> batch = bus.batch("prompts.jsonl", service="writer", metadata={"team": "search"})  # doctest: +SKIP
        >>> batch.wait(timeout=3600)
        >>> batch.results("out.jsonl", errors="errors.jsonl")
    """

    def __init__(self, settings: Settings, batch_id: str, *, store: BatchStore | None = None) -> None:
        self.settings = settings
        self.store = store or BatchStore(settings.state_dir)
        self.id = batch_id
        self.store.get(batch_id)  # raises UnknownBatch early

    @property
    def record(self) -> BatchRecord:
        """The stored record, as of now."""
        return self.store.get(self.id)

    def send(self, *, on_progress: OnProgress | None = None, timeout: float | None = None) -> BatchStatus:
        """Publish the requests not sent yet (paced by max_in_flight); returns once all are out or it is cancelled."""
        return run_sync(drive(self.settings, self.store, self.id, until="sent", collect=False,
                              on_progress=on_progress, timeout=timeout))

    def wait(self, *, timeout: float | None = None, on_progress: OnProgress | None = None) -> BatchStatus:
        """Send what is left and collect results until the batch is finished.

        Raises:
            ReplyTimeout: not finished within `timeout` seconds (it goes on; call `wait` again).
        """
        return run_sync(drive(self.settings, self.store, self.id, until="terminal", timeout=timeout,
                              on_progress=on_progress))

    def status(self) -> BatchStatus:
        """Collect the results waiting (unless another process is collecting), then report progress."""
        return run_sync(drive(self.settings, self.store, self.id, until="drained", send=False))

    def cancel(self, *, wait: bool = False, timeout: float | None = None) -> BatchStatus:
        """Stop sending: requests not sent yet never will be; results of those sent are still collected.

        The batch is `cancelling` until the requests already sent have their results (or
        `batch.cancel_grace_s` passed), then `cancelled`; never-sent requests get a
        `batch_cancelled` line in the error file.
        """
        self.store.cancel(self.id)
        until: Until = "terminal" if wait else "drained"
        return run_sync(drive(self.settings, self.store, self.id, until=until, send=False, timeout=timeout))

    def results(self, output: str | Path, errors: str | Path | None = None, *, wait: bool = False,
                timeout: float | None = None) -> BatchStatus:
        """Collect what is waiting (or everything, with `wait`) and write the output and error JSONL files.

        Lines are in arrival order, one per custom_id: join on `custom_id`. The files are replaced
        atomically and hold only committed lines, so they are consistent even while a collector runs.

        Args:
            output: where successful results go.
            errors: where failed, cancelled and expired requests go (default: `<output>.errors.jsonl`).
        """
        until: Until = "terminal" if wait else "drained"
        status = run_sync(drive(self.settings, self.store, self.id, until=until, send=wait, timeout=timeout))
        output = Path(output)
        errors = Path(errors) if errors is not None else default_errors_path(output)
        record = self.record
        snapshot(self.store.output_path(self.id), record.output_bytes, output)
        snapshot(self.store.errors_path(self.id), record.errors_bytes, errors)
        return status

    def __repr__(self) -> str:
        return f"Batch({self.id!r}, state={self.record.state.value})"


def default_errors_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.errors{output.suffix or '.jsonl'}")


def submit_batch(
    settings: Settings,
    source: str | Path | Iterable[bytes | str],
    *,
    service: str | None = None,
    url: str | None = None,
    endpoint: str | None = None,
    completion_window: str | None = None,
    metadata: Mapping[str, str] | Iterable[str] | None = None,
    skip_invalid: bool = False,
    max_in_flight: int | None = None,
    send: bool = True,
    wait: bool = False,
    timeout: float | None = None,
    on_progress: OnProgress | None = None,
) -> Batch:
    """Validate a JSONL batch (path or lines), record it, and send its requests.

    Args:
        source: a JSONL file of OpenAI batch lines or plain request bodies, or its lines.
        service / url: what to call (exactly one).
        endpoint: the batch endpoint, e.g. `/v1/chat/completions` (else the first line's `url`).
        completion_window: how long the batch may take (`24h`); then it expires.
        metadata: up to 16 key-value pairs kept with the batch.
        skip_invalid: leave invalid lines out instead of refusing the file.
        max_in_flight: requests out without a result at once (0: unbounded).
        send: publish now (False: only validate and record; `Batch.send`/`wait` later).
        wait: also collect until the batch is finished.

    Raises:
        InvalidBatch: invalid lines (with line numbers in `.report`); nothing was sent.
        ValueError: bad endpoint, window, metadata or target.
    """
    store = BatchStore(settings.state_dir)
    lines = Path(source) if isinstance(source, str | Path) else source
    record = create_batch(settings, store, lines, target=Target(service=service, url=url), endpoint=endpoint,
                          completion_window=completion_window, metadata=metadata, skip_invalid=skip_invalid,
                          max_in_flight=max_in_flight)
    batch = Batch(settings, record.id, store=store)
    if wait:
        batch.wait(timeout=timeout, on_progress=on_progress)
    elif send:
        batch.send(on_progress=on_progress, timeout=timeout)
    return batch


def list_batches(settings: Settings) -> list[BatchRecord]:
    """Every batch of this state directory, newest first."""
    return BatchStore(settings.state_dir).all()


def submit_and_wait(
    bus: Any,
    source: str | Path | Iterable[bytes | str],
    *,
    output: str | Path,
    errors: str | Path | None = None,
    console: Any = None,
    timeout: float | None = 3600.0,
    **options: Any,
) -> BatchStatus:
    """Submit a batch with a `ModelBus`'s settings, follow it (a live bar on `console`), write its files.

    Args:
        bus: a `ModelBus` (its settings are used).
        output / errors: where the output and error JSONL go.
        console: a rich Console for the progress bar (None: no bar).
        options: as for `submit_batch` (service=..., endpoint=..., metadata=..., ...).

    Returns:
        the final status; `str()` of it is a one-line summary.
    """
    from producers.batch.progress import live_progress

    settings: Settings = bus.settings
    batch = submit_batch(settings, source, send=False, **options)
    with live_progress(console, batch.id, enabled=console is not None) as update:
        batch.wait(timeout=timeout, on_progress=update)
    return batch.results(output, errors)
