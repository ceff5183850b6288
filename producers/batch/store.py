"""The durable record of batches: metadata and lifecycle, and the fate of every request in them.

One SQLite file under `<state_dir>/batches/` (WAL, busy timeout: several processes may submit,
collect and cancel at once), plus a directory per batch for its output and error JSONL files.

Each request (item) has two independent facts:

* `sent`: `pending` (not published), `sending` (claimed by a submitter; treated as sent, since it
  may be on the wire), `sent` (confirmed by the broker) or `withdrawn` (cancelled or expired
  before it was published; it never will be);
* `outcome`: NULL until its line is in a result file, then `completed`, `failed`, `cancelled` or
  `expired`. Each custom_id gets an outcome at most once; that is what makes collection
  exactly-once.

Claiming requests and cancelling are both single transactions on the same rows, so once `cancel`
returns, the set of requests that were (or may be being) sent is fixed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.types import InvokeProtocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id          TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    record      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    batch_id    TEXT NOT NULL,
    custom_id   TEXT NOT NULL,
    line        INTEGER NOT NULL,
    request     TEXT NOT NULL,
    sent        TEXT NOT NULL DEFAULT 'pending',
    outcome     TEXT,
    result_id   TEXT,
    PRIMARY KEY (batch_id, custom_id)
);
CREATE INDEX IF NOT EXISTS items_by_sent ON items (batch_id, sent, line);
"""


class BatchState(StrEnum):
    """The OpenAI Batch API lifecycle."""

    validating = "validating"
    failed = "failed"
    in_progress = "in_progress"
    finalizing = "finalizing"
    completed = "completed"
    expired = "expired"
    cancelling = "cancelling"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (BatchState.failed, BatchState.completed, BatchState.expired, BatchState.cancelled)


#: States a cancel applies to.
CANCELLABLE = (BatchState.validating, BatchState.in_progress, BatchState.finalizing)


class BatchRecord(BaseModel):
    """A batch as stored: what it runs against, its lifecycle timestamps (epoch seconds) and metadata."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    state: BatchState = BatchState.validating
    service: str | None = None
    url: str | None = None
    endpoint: str
    protocol: InvokeProtocol
    input_file: str | None = None
    total: int = 0
    skipped: int = Field(default=0, description="Invalid lines left out with skip_invalid.")
    completion_window: str = "24h"
    metadata: dict[str, str] = Field(default_factory=dict)
    results_queue: str
    results_ttl_s: int = 30 * 86_400
    max_in_flight: int = 0
    errors: list[dict[str, Any]] = Field(default_factory=list, description="Validation errors (first 100).")
    message: str | None = Field(default=None, description="Why the batch failed, in words.")
    created_at: float
    expires_at: float
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    output_bytes: int = Field(default=0, description="Committed length of the output file, bytes.")
    errors_bytes: int = Field(default=0, description="Committed length of the error file, bytes.")


@dataclass(frozen=True)
class Item:
    """One request of a batch, as the submitter needs it."""

    custom_id: str
    line: int
    protocol: InvokeProtocol
    body: dict[str, Any]
    model_name: str | None


@dataclass(frozen=True)
class Counts:
    """How the requests of a batch stand.

    `pending` are not claimed for sending yet, `sent` were (or may have been) published, `withdrawn`
    never will be; `completed`..`expired` have their line written; `open` are neither written nor
    withdrawn (they wait for a result, or to be sent).
    """

    total: int = 0
    pending: int = 0
    sent: int = 0
    withdrawn: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    open: int = 0

    @property
    def collected(self) -> int:
        return self.completed + self.failed + self.cancelled + self.expired

    @property
    def answered(self) -> int:
        """Requests whose line is in a result file because the model server was asked."""
        return self.completed + self.failed


class UnknownBatch(KeyError):
    def __str__(self) -> str:
        return f"no batch {self.args[0]!r} in this state directory"


class BatchLocked(RuntimeError):
    """Another process is collecting this batch's results right now."""


class BatchStore:
    """Batches and their requests under `state_dir`.

    Example:
        >>> store = BatchStore(Path(".modelbus"))  # doctest: +SKIP
        >>> store.counts("batch_5f0c...").completed
        1234
    """

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "batches"
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "batches.sqlite3"
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _db(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if write:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            else:
                yield db
        finally:
            db.close()

    # -- files ------------------------------------------------------------------------------------
    def directory(self, batch_id: str) -> Path:
        path = self.root / batch_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output_path(self, batch_id: str) -> Path:
        return self.directory(batch_id) / "output.jsonl"

    def errors_path(self, batch_id: str) -> Path:
        return self.directory(batch_id) / "errors.jsonl"

    @contextlib.contextmanager
    def collecting(self, batch_id: str, *, block: bool = True) -> Iterator[None]:
        """Hold the batch's collection lock (one collector per batch; released if the process dies).

        Raises:
            BatchLocked: `block` is False and another process holds it.
        """
        with (self.directory(batch_id) / "collect.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            except BlockingIOError as exc:
                raise BatchLocked(f"batch {batch_id} is being collected by another process") from exc
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- batches ----------------------------------------------------------------------------------
    def create(self, record: BatchRecord, items: Iterable[tuple[str, int, dict[str, Any]]]) -> BatchRecord:
        """Store a new batch with its requests `(custom_id, line, request)` in one transaction."""
        with self._db(write=True) as db:
            db.execute("INSERT INTO batches (id, state, created_at, record) VALUES (?, ?, ?, ?)",
                       (record.id, record.state.value, record.created_at, record.model_dump_json()))
            db.executemany(
                "INSERT INTO items (batch_id, custom_id, line, request) VALUES (?, ?, ?, ?)",
                ((record.id, cid, line, json.dumps(request, separators=(",", ":"))) for cid, line, request in items),
            )
        self.directory(record.id)
        return record

    def get(self, batch_id: str) -> BatchRecord:
        with self._db() as db:
            return self._get(db, batch_id)

    @staticmethod
    def _get(db: sqlite3.Connection, batch_id: str) -> BatchRecord:
        row = db.execute("SELECT record FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise UnknownBatch(batch_id)
        return BatchRecord.model_validate_json(row[0])

    @staticmethod
    def _put(db: sqlite3.Connection, record: BatchRecord) -> None:
        db.execute("UPDATE batches SET state = ?, record = ? WHERE id = ?",
                   (record.state.value, record.model_dump_json(), record.id))

    def all(self) -> list[BatchRecord]:
        """Every batch, newest first."""
        with self._db() as db:
            rows = db.execute("SELECT record FROM batches ORDER BY created_at DESC").fetchall()
        return [BatchRecord.model_validate_json(row[0]) for row in rows]

    def update(self, batch_id: str, **changes: Any) -> BatchRecord:
        with self._db(write=True) as db:
            record = self._get(db, batch_id).model_copy(update=changes)
            self._put(db, record)
        return record

    def transition(self, batch_id: str, to: BatchState, *, allowed_from: Iterable[BatchState],
                   now: float | None = None, **changes: Any) -> BatchRecord | None:
        """Move a batch to `to` (stamping `<to>_at`) if it is in one of `allowed_from`; None otherwise."""
        with self._db(write=True) as db:
            record = self._get(db, batch_id)
            if record.state not in tuple(allowed_from):
                return None
            stamp = {f"{to.value}_at": time.time() if now is None else now}
            record = record.model_copy(update={"state": to, **stamp, **changes})
            self._put(db, record)
        return record

    def cancel(self, batch_id: str, *, now: float | None = None) -> BatchRecord:
        """Mark a batch cancelling and withdraw every request not yet claimed, in one transaction.

        Returns the record (unchanged when the batch was already finished or cancelling).
        """
        with self._db(write=True) as db:
            record = self._get(db, batch_id)
            if record.state not in CANCELLABLE:
                return record
            record = record.model_copy(update={"state": BatchState.cancelling,
                                               "cancelling_at": time.time() if now is None else now})
            self._put(db, record)
            db.execute("UPDATE items SET sent = 'withdrawn' WHERE batch_id = ? AND sent = 'pending'", (batch_id,))
        return record

    def withdraw_pending(self, batch_id: str) -> int:
        """Withdraw the requests not yet claimed (an expired batch sends nothing more)."""
        with self._db(write=True) as db:
            cursor = db.execute("UPDATE items SET sent = 'withdrawn' WHERE batch_id = ? AND sent = 'pending'",
                                (batch_id,))
            return cursor.rowcount

    # -- sending ----------------------------------------------------------------------------------
    def claim(self, batch_id: str, limit: int) -> list[Item]:
        """Claim up to `limit` pending requests for sending, in line order, if the batch is in progress."""
        with self._db(write=True) as db:
            if self._get(db, batch_id).state is not BatchState.in_progress:
                return []
            rows = db.execute(
                "SELECT custom_id, line, request FROM items WHERE batch_id = ? AND sent = 'pending' "
                "ORDER BY line LIMIT ?", (batch_id, limit),
            ).fetchall()
            db.executemany("UPDATE items SET sent = 'sending' WHERE batch_id = ? AND custom_id = ?",
                           ((batch_id, row[0]) for row in rows))
        return [_item(row) for row in rows]

    def claimed(self, batch_id: str) -> list[Item]:
        """Requests claimed but never confirmed (their submitter died): to be published again."""
        with self._db() as db:
            rows = db.execute("SELECT custom_id, line, request FROM items WHERE batch_id = ? AND sent = 'sending' "
                              "ORDER BY line", (batch_id,)).fetchall()
        return [_item(row) for row in rows]

    def mark_sent(self, batch_id: str, custom_ids: Iterable[str]) -> None:
        with self._db(write=True) as db:
            db.executemany("UPDATE items SET sent = 'sent' WHERE batch_id = ? AND custom_id = ? AND sent = 'sending'",
                           ((batch_id, cid) for cid in custom_ids))

    def unclaim(self, batch_id: str, custom_ids: Iterable[str]) -> None:
        """Give back claimed requests whose publishing failed (nothing of them was confirmed)."""
        with self._db(write=True) as db:
            db.executemany(
                "UPDATE items SET sent = 'pending' WHERE batch_id = ? AND custom_id = ? AND sent = 'sending'",
                ((batch_id, cid) for cid in custom_ids),
            )

    # -- results ----------------------------------------------------------------------------------
    def collected_ids(self, batch_id: str) -> tuple[set[str], set[str]]:
        """The custom_ids that have a line in a result file, and the result ids written."""
        with self._db() as db:
            rows = db.execute("SELECT custom_id, result_id FROM items WHERE batch_id = ? AND outcome IS NOT NULL",
                              (batch_id,)).fetchall()
        return {row[0] for row in rows}, {row[1] for row in rows if row[1]}

    def known_ids(self, batch_id: str) -> set[str]:
        with self._db() as db:
            return {row[0] for row in db.execute("SELECT custom_id FROM items WHERE batch_id = ?", (batch_id,))}

    def uncollected(self, batch_id: str, *, unsent_only: bool = False) -> list[str]:
        """custom_ids without a result line (only the withdrawn ones with `unsent_only`)."""
        extra = " AND sent = 'withdrawn'" if unsent_only else ""
        with self._db() as db:
            rows = db.execute(f"SELECT custom_id FROM items WHERE batch_id = ? AND outcome IS NULL{extra} "  # noqa: S608
                              "ORDER BY line", (batch_id,)).fetchall()
        return [row[0] for row in rows]

    def record_outcomes(self, batch_id: str, outcomes: Iterable[tuple[str, str, str | None]], *,
                        output_bytes: int, errors_bytes: int) -> None:
        """Record `(custom_id, outcome, result_id)` for lines now durably in the files, with the files' lengths."""
        with self._db(write=True) as db:
            db.executemany(
                "UPDATE items SET outcome = ?, result_id = ? WHERE batch_id = ? AND custom_id = ? AND outcome IS NULL",
                ((outcome, rid, batch_id, cid) for cid, outcome, rid in outcomes),
            )
            record = self._get(db, batch_id).model_copy(update={"output_bytes": output_bytes,
                                                                 "errors_bytes": errors_bytes})
            self._put(db, record)

    def counts(self, batch_id: str) -> Counts:
        with self._db() as db:
            rows = db.execute("SELECT sent, outcome, COUNT(*) FROM items WHERE batch_id = ? GROUP BY sent, outcome",
                              (batch_id,)).fetchall()
        tally: dict[str, int] = {}
        total = 0
        for sent, outcome, n in rows:
            total += n
            key = "sent" if sent in ("sending", "sent") else sent
            tally[key] = tally.get(key, 0) + n
            if outcome:
                tally[outcome] = tally.get(outcome, 0) + n
            elif sent != "withdrawn":
                tally["open"] = tally.get("open", 0) + n
        return Counts(total=total, **tally)


def _item(row: tuple[str, int, str]) -> Item:
    request = json.loads(row[2])
    return Item(row[0], row[1], InvokeProtocol(request["protocol"]), request["body"], request.get("model_name"))
