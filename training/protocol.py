"""The job's half of the conversation with the worker: JSON lines on stdout.

A training job runs in a subprocess or a Kubernetes pod; all the worker sees is its log. Three kinds of
line carry meaning, everything else (library logs) is just log:

    {"progress": {"epoch": 1.0, "step": 10, "max_steps": 20, "loss": 0.41}}
    {"result": {"task": "sequence_classification", "metrics": {"eval_accuracy": 0.97}, ...}}
    {"error": {"reason": "UnknownColumn", "message": "dataset has no column 'sentence'"}}

`parse_line` is what the worker (and the CLI) use to read them back.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    epoch: float | None = None
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {k: v for k, v in (("epoch", self.epoch), ("step", self.step),
                                                   ("max_steps", self.max_steps), ("loss", self.loss))
                                if v is not None}
        data.update(self.metrics)
        return data


@dataclass(frozen=True)
class Result:
    data: dict[str, Any]


@dataclass(frozen=True)
class Error:
    reason: str
    message: str


Line = Progress | Result | Error


def _clean(value: Any) -> Any:
    """Floats that JSON cannot carry (nan, inf) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _write(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(_clean(obj), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def emit_progress(progress: Progress) -> None:
    _write({"progress": progress.to_dict()})


def emit_result(result: dict[str, Any]) -> None:
    _write({"result": result})


def emit_error(reason: str, message: str) -> None:
    _write({"error": {"reason": reason, "message": message}})


_KNOWN = ("epoch", "step", "max_steps", "loss")


def parse_line(line: str) -> Line | None:
    """Read one log line; None when it is not a protocol line.

    Example:
        >>> parse_line('{"progress": {"epoch": 1.0, "step": 5, "loss": 0.3}}')
        Progress(epoch=1.0, step=5, max_steps=None, loss=0.3, metrics={})
    """
    obj = _json_object(line)
    if obj is None or len(obj) != 1:
        return None
    (kind, body), = obj.items()
    if not isinstance(body, dict):
        return None
    if kind == "progress":
        metrics = {k: float(v) for k, v in body.items() if k not in _KNOWN and isinstance(v, int | float)}
        return Progress(
            epoch=_num(body.get("epoch")), step=_int(body.get("step")), max_steps=_int(body.get("max_steps")),
            loss=_num(body.get("loss")), metrics=metrics,
        )
    if kind == "result":
        return Result(body)
    if kind == "error":
        return Error(str(body.get("reason", "TrainingFailed")), str(body.get("message", "")))
    return None


def _json_object(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None
