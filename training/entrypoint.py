"""`python -m training SPEC.json`: one training job, from spec to a model folder in the artefact store.

Runs the same way in a local subprocess and in a Kubernetes Job. The order matters:
  1. read the spec, resolve the base model, load and check the dataset (cheap; a bad spec fails here,
     before torch is imported);
  2. train (built-in recipe, or the user's `train(context)`) into a private scratch folder;
  3. write `training_result.json` into the model folder and only then put the whole folder at the
     version's place in the store (an atomic rename on disk, result file last on S3);
  4. print the `{"result": ...}` line. Failures print an `{"error": ...}` line and exit non-zero, having
     written nothing to the store.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.events import TrainRequested
from schemas.types import Task
from training import custom
from training.context import TrainContext
from training.data import load_splits, require_columns
from training.errors import (
    EXIT_CRASH,
    EXIT_OK,
    EXIT_SPEC_ERROR,
    INVALID_SPEC,
    STORAGE_FAILED,
    TRAINING_FAILED,
    SpecError,
)
from training.protocol import emit_error, emit_result
from training.recipes import NEEDS_LABELS, RECIPES, RecipeInput
from training.recipes.common import BaseModelRef, check_max_length, load_config, resolve_base_model
from training.spec import RESULT_FILE, JobSpec
from workers.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore


def main(argv: list[str] | None = None) -> int:
    """Run the job described by the spec file named in `argv`; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training SPEC.json", file=sys.stderr)
        return EXIT_SPEC_ERROR
    try:
        spec = JobSpec.load(Path(args[0]))
    except ValueError as exc:
        emit_error(INVALID_SPEC, str(exc))
        return EXIT_SPEC_ERROR
    try:
        result = run(spec)
    except SpecError as exc:
        emit_error(exc.reason, exc.message)
        return exc.exit_code
    except ArtifactError as exc:
        emit_error(STORAGE_FAILED, str(exc))
        return EXIT_CRASH
    except Exception as exc:
        traceback.print_exc()
        emit_error(TRAINING_FAILED, f"{type(exc).__name__}: {exc}")
        return EXIT_CRASH
    emit_result(result)
    return EXIT_OK


@contextmanager
def _scratch(spec: JobSpec) -> Iterator[Path]:
    if spec.work_dir:
        path = Path(spec.work_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix=f"modelbus-{spec.run_id}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(spec: JobSpec) -> dict[str, Any]:
    """Train, store the model folder at `spec.output_uri`, and return the result record."""
    store = ArtifactStore(spec.output_uri, s3_endpoint_url=spec.s3_endpoint_url, s3_region=spec.s3_region)
    with _scratch(spec) as work:
        out = work / "model"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        downloads = work / "inputs"

        def fetch(uri: str) -> Path:
            try:
                return store.fetch(uri, downloads)
            except ArtifactNotFound as exc:
                raise FileNotFoundError(str(exc)) from exc

        request = spec.request
        model = resolve_base_model(spec.base_model, fetch)
        if request.code is not None:
            ctx = TrainContext(request=request, base_model=model.ref, output_dir=out, work_dir=work, fetch=fetch)
            custom.run(request.code, ctx)
            assert ctx.logged is not None
            result = _result(spec, metrics=ctx.metrics, labels=ctx.logged.labels,
                             task=ctx.logged.task or request.task.value,
                             base_model=ctx.logged.base_model or str(request.base_model), custom=True)
        else:
            result = _run_recipe(spec, request, model, fetch=fetch, out=out, work=work)
        (out / RESULT_FILE).write_text(json.dumps(result, indent=2))
        store.put_tree(out, spec.output_uri, last=[RESULT_FILE])
    return result


def _run_recipe(spec: JobSpec, request: TrainRequested, model: BaseModelRef, *, fetch: Callable[[str], Path],
                out: Path, work: Path) -> dict[str, Any]:
    if request.dataset is None:
        raise SpecError(INVALID_SPEC, "the built-in recipes need a dataset")
    hp = request.hyperparameters
    data = request.dataset
    splits = load_splits(data, fetch=fetch, need_eval=hp.eval_strategy != "no")
    needs_labels = request.task in NEEDS_LABELS
    require_columns(splits, [data.text_column, data.text_pair_column,
                             data.label_column if needs_labels else None])
    check_max_length(load_config(model), hp)
    recipe = RECIPES[Task(request.task)]
    output = recipe(RecipeInput(
        hp=hp, model=model, splits=splits, text_column=data.text_column, label_column=data.label_column,
        text_pair_column=data.text_pair_column, labels=request.labels, out_dir=out, work_dir=work,
    ))
    return _result(spec, metrics=output.metrics, labels=output.labels, task=Task(request.task).value,
                   base_model=str(request.base_model), custom=False)


def _result(spec: JobSpec, *, metrics: dict[str, float], labels: list[str] | None, task: str | None,
            base_model: str, custom: bool) -> dict[str, Any]:
    return {
        "run_id": spec.run_id,
        "version": spec.version,
        "path": spec.output_uri,
        "task": task,
        "base_model": base_model,
        "metrics": metrics,
        "labels": labels,
        "hyperparameters": spec.request.hyperparameters.model_dump(),
        "custom": custom,
        "finished": datetime.now(UTC).isoformat(),
    }
