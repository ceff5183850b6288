"""Collection: a batch's results queue drained into its output and error files, each custom_id once.

The order of a flush is what makes it exactly-once across crashes:

1. append the new lines to the files and fsync them;
2. record, in one store transaction, which custom_ids now have a line and how long the files are;
3. only then acknowledge the deliveries (one multiple-ack for the chunk).

A crash after 1 leaves lines beyond the committed length: `recover` (run before consuming) adopts
complete ones and cuts a torn last line. A crash after 2 leaves deliveries unacknowledged: they
come again and are skipped, being known by custom_id (and by result id). A crash before 1 loses
nothing, the deliveries were never acknowledged. Only one collector runs per batch (the caller holds
`BatchStore.collecting`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from aio_pika.abc import AbstractIncomingMessage

from producers.batch.amqp import BatchBroker
from producers.batch.records import WITHDRAWN, Outcome, result_line, withdrawn_line
from producers.batch.store import BatchStore
from schemas.envelope import EventDecodeError, decode
from schemas.events import InvokeCompleted, InvokeFailed

log = logging.getLogger(__name__)

_WITHDRAWN_BY_CODE = {code: outcome for outcome, (code, _) in WITHDRAWN.items()}


class CorruptBatchFiles(RuntimeError):
    """A result file is shorter than what was committed (it was edited or truncated by hand)."""


class Collector:
    """Moves the results of one batch from its queue into its files.

    Args:
        store: the batch store (the caller holds the batch's collection lock).
        broker: a connected `BatchBroker`.
        chunk: results appended, fsynced and acknowledged together.
        max_event_bytes: larger messages are not results of ours.
    """

    def __init__(self, store: BatchStore, batch_id: str, broker: BatchBroker, *, chunk: int = 256,
                 max_event_bytes: int = 1_048_576) -> None:
        self.store = store
        self.batch_id = batch_id
        self.broker = broker
        self.chunk = max(1, chunk)
        self.max_event_bytes = max_event_bytes
        self.ignored = 0
        self.duplicates = 0
        self._buffer: list[AbstractIncomingMessage] = []
        self._arrived = asyncio.Event()
        self._known: set[str] = set()
        self._collected: set[str] = set()
        self._result_ids: set[str] = set()
        self._files: dict[str, BinaryIO] = {}

    # -- recovery ---------------------------------------------------------------------------------
    def recover(self) -> int:
        """Make the files and the store agree again after a crash; returns the lines adopted.

        Raises:
            CorruptBatchFiles: a file is shorter than its committed length.
        """
        record = self.store.get(self.batch_id)
        adopted: list[tuple[str, str, str | None]] = []
        collected, _ = self.store.collected_ids(self.batch_id)
        sizes = {}
        for path, committed, is_output in ((self.store.output_path(self.batch_id), record.output_bytes, True),
                                           (self.store.errors_path(self.batch_id), record.errors_bytes, False)):
            sizes[is_output] = committed
            path.touch(exist_ok=True)
            size = path.stat().st_size
            if size < committed:
                raise CorruptBatchFiles(f"{path} has {size} bytes but {committed} were committed")
            if size == committed:
                continue
            with path.open("r+b") as handle:
                handle.seek(committed)
                tail = handle.read()
                complete = tail[: tail.rfind(b"\n") + 1]
                if len(complete) < len(tail):  # a torn last line: its delivery was never acknowledged
                    handle.truncate(committed + len(complete))
                    handle.flush()
                    os.fsync(handle.fileno())
            for raw in complete.splitlines():
                line = orjson.loads(raw)
                custom_id = line["custom_id"]
                if custom_id in collected:
                    log.warning("line for %s already recorded; keeping the first", custom_id)
                    continue
                collected.add(custom_id)
                adopted.append((custom_id, _outcome_of_line(line, is_output), line.get("id")))
            sizes[is_output] = committed + len(complete)
        if adopted or sizes[True] != record.output_bytes or sizes[False] != record.errors_bytes:
            self.store.record_outcomes(self.batch_id, adopted, output_bytes=sizes[True], errors_bytes=sizes[False])
        if adopted:
            log.info("adopted %d result lines written before an interruption", len(adopted))
        return len(adopted)

    # -- consuming --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover, then consume the results queue (deliveries are buffered until `pump`)."""
        self.recover()
        self._known = self.store.known_ids(self.batch_id)
        self._collected, self._result_ids = self.store.collected_ids(self.batch_id)
        record = self.store.get(self.batch_id)
        for name, path in (("output", self.store.output_path(self.batch_id)),
                           ("errors", self.store.errors_path(self.batch_id))):
            self._files[name] = path.open("ab")
        # A batch cancelled before it started never had a results queue: nothing to consume then.
        if not record.state.terminal and await self.broker.depth(record.results_queue) is not None:
            await self.broker.consume(record.results_queue, self._on_message, prefetch=self.chunk * 2)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._buffer.append(message)
        self._arrived.set()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def pump(self, timeout: float = 0.0) -> int:
        """Wait up to `timeout` seconds for results, then write every buffered one; returns lines written."""
        if not self._buffer and timeout > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return 0
        written = 0
        while self._buffer:
            taken, self._buffer = self._buffer[: self.chunk], self._buffer[self.chunk:]
            written += await self._flush(taken)
        return written

    async def _flush(self, messages: list[AbstractIncomingMessage]) -> int:
        lines: dict[str, list[bytes]] = {"output": [], "errors": []}
        outcomes: list[tuple[str, str, str | None]] = []
        for message in messages:
            found = self._result(message.body)
            if found is None:
                continue
            custom_id, result_id, outcome, line = found
            self._collected.add(custom_id)
            self._result_ids.add(result_id)
            lines["output" if outcome == "completed" else "errors"].append(orjson.dumps(line) + b"\n")
            outcomes.append((custom_id, outcome, result_id))
        if outcomes:
            self._append(lines, outcomes)
        await self.broker.ack_through(messages[-1])
        return len(outcomes)

    def _result(self, body: bytes) -> tuple[str, str, Outcome, dict[str, Any]] | None:
        """The (custom_id, result id, outcome, line) of a delivery, or None for one to skip."""
        try:
            event = decode(body, max_bytes=self.max_event_bytes)
        except EventDecodeError as exc:
            self.ignored += 1
            log.warning("skipping a message that is not an event in the results queue: %s", exc)
            return None
        data = event.data
        if not isinstance(data, InvokeCompleted | InvokeFailed) or data.batch_id != self.batch_id \
                or data.custom_id not in self._known:
            self.ignored += 1
            log.warning("skipping %s %s: not a result of batch %s", event.type, event.id, self.batch_id)
            return None
        if data.custom_id in self._collected or event.id in self._result_ids:
            self.duplicates += 1
            return None
        outcome, line = result_line(event)
        return data.custom_id, event.id, outcome, line

    def _append(self, lines: dict[str, list[bytes]], outcomes: list[tuple[str, str, str | None]]) -> None:
        for name, chunk in lines.items():
            if chunk:
                handle = self._files[name]
                handle.writelines(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        self.store.record_outcomes(self.batch_id, outcomes, output_bytes=self._files["output"].tell(),
                                   errors_bytes=self._files["errors"].tell())

    def write_withdrawn(self, custom_ids: list[str], outcome: Literal["cancelled", "expired"]) -> int:
        """Write error lines for requests the batch gave up on (cancelled or expired); returns lines written."""
        fresh = [cid for cid in custom_ids if cid not in self._collected]
        for start in range(0, len(fresh), 4096):
            part = fresh[start:start + 4096]
            lines = [orjson.dumps(withdrawn_line(self.batch_id, cid, outcome)) + b"\n" for cid in part]
            self._append({"output": [], "errors": lines}, [(cid, outcome, None) for cid in part])
            self._collected.update(part)
        return len(fresh)

    async def stop(self) -> None:
        """Stop consuming; buffered, unwritten deliveries are left unacknowledged (they come again)."""
        await self.broker.cancel_consumers()
        self._buffer.clear()
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def _outcome_of_line(line: dict[str, Any], is_output: bool) -> str:
    if is_output:
        return "completed"
    code = (line.get("error") or {}).get("code")
    return _WITHDRAWN_BY_CODE.get(str(code), "failed")


def snapshot(source: Path, length: int, destination: Path) -> None:
    """Copy the first `length` (committed) bytes of a result file to `destination`, atomically.

    The copy never shows a half-written file: it is written beside the destination and renamed.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    with source.open("rb") as src, partial.open("wb") as dst:
        remaining = length
        while remaining > 0:
            block = src.read(min(remaining, 1 << 20))
            if not block:
                raise CorruptBatchFiles(f"{source} is shorter than its committed {length} bytes")
            dst.write(block)
            remaining -= len(block)
        dst.flush()
        os.fsync(dst.fileno())
    partial.replace(destination)
