"""The service registry: which services modelbus runs, where they answer, and how they are doing.

The deploy worker writes it (deploying -> ready | failed, removed on undeploy); `modelbus services
list` and the invoke worker read it to turn a service name into a URL, model name and task. Other
processes can keep their own copy fresh from `ServiceReady`/`ServiceDeleted` events
(`apply_event`).

One SQLite file under `settings.state_dir` (WAL, busy timeout), safe for several processes at once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from schemas.events import ServiceDeleted, ServiceReady
from workers.sqlite_db import connect

Status = Literal["deploying", "ready", "failed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    name        TEXT PRIMARY KEY,
    record      TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
"""


@dataclass(frozen=True)
class ServiceRecord:
    """One service as the registry knows it.

    Attributes:
        applied_at: wall-clock time (epoch seconds) the current spec was applied; readiness timeouts
            count from here, across follow-up tasks and worker restarts.
        event_id: the DeployRequested that produced the current spec.
        endpoints: the `ServiceEndpoints` of the ready service (empty until ready).
    """

    name: str
    backend: str
    status: Status
    model_name: str
    path: str
    task: str | None = None
    profile: str | None = None
    url: str | None = None
    external_url: str | None = None
    endpoints: dict[str, str] = field(default_factory=dict)
    event_id: str | None = None
    applied_at: float = 0.0
    reason: str | None = None
    message: str | None = None
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ready(self) -> ServiceReady | None:
        """The `ServiceReady` this record stands for, when the service is ready (what invokers need)."""
        if self.status != "ready" or not self.url:
            return None
        return ServiceReady.model_validate({
            "service": self.name, "model_name": self.model_name, "backend": self.backend, "path": self.path,
            "task": self.task, "profile": self.profile, "url": self.url, "external_url": self.external_url,
            "endpoints": self.endpoints,
        })


class ServiceRegistry:
    """Persistent registry of services under a state directory.

    Example:
        >>> reg = ServiceRegistry(Path(".modelbus"))  # doctest: +SKIP
        >>> reg.get("sentiment").url
        'http://127.0.0.1:43121'
    """

    FILENAME = "services.sqlite3"

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / self.FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return connect(self.path)

    def get(self, name: str) -> ServiceRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT record FROM services WHERE name = ?", (name,)).fetchone()
        return None if row is None else _from_json(row[0])

    def list(self) -> list[ServiceRecord]:
        """Every service, by name."""
        with self._connect() as db:
            rows = db.execute("SELECT record FROM services ORDER BY name").fetchall()
        return [_from_json(r[0]) for r in rows]

    def upsert(self, record: ServiceRecord) -> ServiceRecord:
        """Insert or replace the record of `record.name`; returns it with `updated_at` set."""
        record = replace(record, updated_at=time.time())
        with self._connect() as db:
            db.execute(
                "INSERT INTO services (name, record, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                (record.name, json.dumps(record.to_dict()), record.updated_at),
            )
        return record

    def update(self, name: str, **changes: Any) -> ServiceRecord | None:
        """Change some fields of an existing record; None when there is no such service."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT record FROM services WHERE name = ?", (name,)).fetchone()
            if row is None:
                db.execute("ROLLBACK")
                return None
            record = replace(_from_json(row[0]), **changes, updated_at=time.time())
            db.execute("UPDATE services SET record = ?, updated_at = ? WHERE name = ?",
                       (json.dumps(record.to_dict()), record.updated_at, name))
            db.execute("COMMIT")
        return record

    def remove(self, name: str) -> bool:
        """Forget a service; returns whether it was known."""
        with self._connect() as db:
            cur = db.execute("DELETE FROM services WHERE name = ?", (name,))
        return cur.rowcount > 0

    def apply_event(self, data: ServiceReady | ServiceDeleted, *, event_id: str | None = None) -> None:
        """Mirror an outcome event, for registries kept by other processes than the deploy worker."""
        if isinstance(data, ServiceDeleted):
            self.remove(data.service)
            return
        self.upsert(ServiceRecord(
            name=data.service, backend=data.backend, status="ready", model_name=data.model_name, path=data.path,
            task=data.task.value if data.task else None, profile=data.profile, url=data.url,
            external_url=data.external_url, endpoints=data.endpoints.model_dump(exclude_none=True),
            event_id=event_id,
        ))


def _from_json(text: str) -> ServiceRecord:
    data = json.loads(text)
    known = ServiceRecord.__dataclass_fields__
    return ServiceRecord(**{k: v for k, v in data.items() if k in known})
