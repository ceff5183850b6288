"""The one way our SQLite state files (services, model versions) are opened.

Several worker processes and CLI calls share these files, so every connection uses WAL (readers do not
block the writer) and waits up to 30 s for a lock instead of failing with "database is locked".
Connections are in autocommit mode: each statement, or an explicit BEGIN ... COMMIT, is a transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: How long a connection waits for another process's lock, in seconds.
LOCK_TIMEOUT_S = 30.0


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """An autocommit WAL connection to `path`, closed when the block ends."""
    db = sqlite3.connect(path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA busy_timeout={int(LOCK_TIMEOUT_S * 1000)}")
        yield db
    finally:
        db.close()
