"""The model registry: which fine-tuned model versions exist, where their artefacts are, how they scored.

It is what the platform SDK's `log_model(kind="huggingface", ...)` writes and `get_model(...)` reads:
one row per version (name, version, kind, base model, path in the artefact store, metrics, labels,
creation time and the id of the event that produced it). `store://project/model/name[:version|latest]`
references resolve here, so a `DeployRequested` can name a model by reference instead of by path.

The store is one SQLite file under `settings.state_dir` in WAL mode with a busy timeout, so the train
worker, the deploy worker and the CLI can use it from several processes at once. A version is recorded
only after its artefacts are complete in the artefact store (see `workers.train.handlers`), so a row
always points at a whole model.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.settings import Settings
from schemas.types import ModelURI, URIScheme
from workers.errors import PermanentError
from workers.sqlite_db import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    base_model  TEXT NOT NULL,
    task        TEXT,
    path        TEXT NOT NULL,
    metrics     TEXT NOT NULL,
    labels      TEXT,
    created     TEXT NOT NULL,
    event_id    TEXT,
    UNIQUE (project, name, version)
);
CREATE INDEX IF NOT EXISTS models_by_event ON models (event_id);
"""

_INSERT = (
    "INSERT OR IGNORE INTO models (project, name, version, kind, base_model, task, path, metrics, labels, created,"
    " event_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
#: Every read uses this fixed column order (see `_from_row`); filters are bound parameters.
_SELECT = (
    "SELECT project, name, version, kind, base_model, task, path, metrics, labels, created, event_id FROM models"
    " WHERE (:project IS NULL OR project = :project) AND (:name IS NULL OR name = :name)"
    " AND (:version IS NULL OR version = :version) AND (:event_id IS NULL OR event_id = :event_id)"
    " ORDER BY seq DESC"
)


class UnknownModel(PermanentError):
    """A `store://` reference names no recorded model version."""

    reason = "UnknownModel"


@dataclass(frozen=True)
class ModelVersion:
    """One logged model version.

    Example:
        >>> mv = ModelVersion("default", "sentiment", "3f2a", base_model="file:///m", path="file:///a/")
        >>> mv.store_uri
        'store://default/model/sentiment:3f2a'
    """

    project: str
    name: str
    version: str
    base_model: str
    path: str
    kind: str = "huggingface"
    task: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    labels: list[str] | None = None
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    event_id: str | None = None

    @property
    def store_uri(self) -> str:
        return f"store://{self.project}/model/{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created"] = self.created.isoformat()
        data["store_uri"] = self.store_uri
        return data


class ModelRegistry:
    """Persistent, multi-process registry of model versions.

    Args:
        path: the SQLite file (created with its parent directory when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        return cls(settings.state_dir / "models.sqlite3")

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return connect(self.path)

    def record(self, version: ModelVersion) -> ModelVersion:
        """Record a version; recording the same (project, name, version) again returns the first record.

        That makes a redelivered training request harmless: its derived version id is the same.
        """
        row = (
            version.project, version.name, version.version, version.kind, version.base_model, version.task,
            version.path, json.dumps(version.metrics), None if version.labels is None else json.dumps(version.labels),
            version.created.isoformat(), version.event_id,
        )
        with self._connect() as db:
            db.execute(_INSERT, row)
        return self.get(version.project, version.name, version.version)

    def get(self, project: str, name: str, version: str | None = None) -> ModelVersion:
        """One version, or the latest one when `version` is None or `latest`.

        Raises:
            UnknownModel: nothing recorded under that name (and version).
        """
        found = self._select(project=project, name=name, version=None if version == "latest" else version)
        if not found:
            ref = f"store://{project}/model/{name}" + (f":{version}" if version else "")
            raise UnknownModel(f"no model version recorded for {ref}", details={"ref": ref})
        return found[0]

    def find_by_event(self, event_id: str) -> ModelVersion | None:
        """The version a given TrainRequested produced, if it was already recorded."""
        found = self._select(event_id=event_id)
        return found[0] if found else None

    def versions(self, project: str | None = None, name: str | None = None) -> list[ModelVersion]:
        """Versions, newest first, optionally of one project and name."""
        return self._select(project=project or None, name=name or None)

    def _select(self, *, project: str | None = None, name: str | None = None, version: str | None = None,
                event_id: str | None = None) -> list[ModelVersion]:
        params = {"project": project, "name": name, "version": version, "event_id": event_id}
        with self._connect() as db:
            return [_from_row(r) for r in db.execute(_SELECT, params).fetchall()]

    def delete(self, project: str, name: str, version: str) -> bool:
        """Forget one version (its artefacts stay); returns whether it existed."""
        with self._connect() as db:
            cur = db.execute("DELETE FROM models WHERE project=? AND name=? AND version=?", (project, name, version))
        return cur.rowcount > 0

    def lookup(self, uri: str | ModelURI) -> ModelVersion:
        """The version a `store://project/model/name[:version|latest]` reference names."""
        parsed = uri if isinstance(uri, ModelURI) else ModelURI.parse(uri)
        if parsed.scheme != URIScheme.store:
            raise ValueError(f"{uri} is not a store:// model reference")
        return self.get(parsed.authority, parsed.path, parsed.revision)

    def resolve(self, uri: str | ModelURI) -> str:
        """The artefact path (file:// or s3:// folder) a `store://` reference names.

        Example:
            >>> registry.resolve("store://default/model/sentiment:latest")  # doctest: +SKIP
            'file:///var/lib/modelbus/artifacts/default/model/sentiment/0b9c.../'

        Raises:
            UnknownModel: no such version is recorded.
            ValueError: `uri` is not a `store://` reference.
        """
        return self.lookup(uri).path


def _from_row(row: tuple[Any, ...]) -> ModelVersion:
    project, name, version, kind, base_model, task, path, metrics, labels, created, event_id = row
    return ModelVersion(
        project=project, name=name, version=version, kind=kind, base_model=base_model, task=task, path=path,
        metrics=json.loads(metrics), labels=None if labels is None else json.loads(labels),
        created=datetime.fromisoformat(created), event_id=event_id,
    )
