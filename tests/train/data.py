"""Small labelled datasets made at test time, and a way to run the training job on a spec.

The sentiment data is clearly separable by vocabulary (positive vs negative adjectives), so a real
fine-tune of a small encoder learns it in a couple of epochs on a CPU; the held-out sentences use
nouns and templates the training set never saw.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.protocol import Error, Progress, Result, parse_line

POSITIVE = ("great", "wonderful", "excellent", "lovely", "fantastic", "superb", "delightful", "amazing")
NEGATIVE = ("terrible", "awful", "horrible", "dreadful", "nasty", "disgusting", "miserable", "poor")
NOUNS = ("movie", "meal", "service", "hotel", "book", "song", "trip", "game", "concert", "room")
TEMPLATES = ("the {noun} was {adj}", "what a {adj} {noun}", "i found the {noun} {adj}", "honestly a {adj} {noun}")

#: Held out: nouns and templates absent from the training data.
HELD_OUT = [
    ("the pizza tasted amazing", "positive"),
    ("this museum is wonderful", "positive"),
    ("our neighbours are lovely", "positive"),
    ("the weather today is fantastic", "positive"),
    ("a truly excellent lecture", "positive"),
    ("the pizza tasted awful", "negative"),
    ("this museum is dreadful", "negative"),
    ("our neighbours are horrible", "negative"),
    ("the weather today is miserable", "negative"),
    ("a truly terrible lecture", "negative"),
]


def sentiment_rows(n: int = 200, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        adj = rng.choice(POSITIVE if positive else NEGATIVE)
        text = rng.choice(TEMPLATES).format(noun=rng.choice(NOUNS), adj=adj)
        rows.append({"text": text, "label": "positive" if positive else "negative"})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


TAGS = {"paris": "LOC", "rome": "LOC", "berlin": "LOC", "alice": "PER", "bob": "PER", "carol": "PER"}


def tagged_rows(n: int = 60, seed: int = 0) -> list[dict[str, Any]]:
    """Token-classification rows: `tokens` (words) and `tags` (O, PER, LOC)."""
    rng = random.Random(seed)
    people = [w for w, t in TAGS.items() if t == "PER"]
    places = [w for w, t in TAGS.items() if t == "LOC"]
    rows = []
    for _ in range(n):
        words = [rng.choice(people), "went", "to", rng.choice(places), "today"]
        rows.append({"tokens": words, "tags": [TAGS.get(w, "O") for w in words]})
    return rows


@dataclass
class JobRun:
    returncode: int
    output: str
    progress: list[Progress]
    result: dict[str, Any] | None
    error: Error | None


def run_job(spec: dict[str, Any], spec_path: Path, *, timeout: float = 240,
            env: dict[str, str] | None = None) -> JobRun:
    """Run `python -m training SPEC` as the workers do, and read its protocol lines back."""
    spec_path.write_text(json.dumps(spec))
    completed = subprocess.run(
        [sys.executable, "-m", "training", str(spec_path)], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=spec_path.parent, check=False,
    )
    lines = [parse_line(line) for line in completed.stdout.splitlines()]
    results = [line.data for line in lines if isinstance(line, Result)]
    errors = [line for line in lines if isinstance(line, Error)]
    return JobRun(
        returncode=completed.returncode,
        output=completed.stdout + completed.stderr,
        progress=[line for line in lines if isinstance(line, Progress)],
        result=results[-1] if results else None,
        error=errors[-1] if errors else None,
    )


def job_spec(request: dict[str, Any], output_uri: str, *, run_id: str = "train-test", version: str = "v1",
             **extra: Any) -> dict[str, Any]:
    return {"request": request, "run_id": run_id, "version": version, "base_model": request["base_model"],
            "output_uri": output_uri, **extra}
