"""A small labelled sentiment dataset, generated so the demo needs no download."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = ("great", "wonderful", "excellent", "lovely", "fantastic", "delightful", "superb", "amazing")
NEGATIVE = ("terrible", "awful", "horrible", "dreadful", "disappointing", "poor", "boring", "painful")
SUBJECTS = ("the film", "this phone", "the service", "our stay", "the meal", "the book", "the concert", "the app")
FRAMES = ("{s} was {w}", "honestly, {s} felt {w}", "I found {s} {w}", "{s} is {w} overall", "what a {w} time, {s}")


def sentiment_rows(n: int, *, seed: int) -> list[tuple[str, str]]:
    """`n` (text, label) pairs, half positive, half negative, shuffled deterministically."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        rows.append((rng.choice(FRAMES).format(s=rng.choice(SUBJECTS), w=word), label))
    rng.shuffle(rows)
    return rows


def write_sentiment_csv(path: Path, n: int = 240, *, seed: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(sentiment_rows(n, seed=seed))
    return path
