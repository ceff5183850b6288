"""The `context` a user's `train(context)` handler receives: inputs, outputs and `log_model`.

It plays the part of the platform's project handle inside a python job: the handler reads the request's
dataset and parameters, trains however it likes, and calls `context.log_model(...)` with the folder it
saved the model to. modelbus then stores that folder as the new model version and publishes
`ModelLogged`, exactly as for a built-in recipe.

Example (a user module):

    def train(context):
        splits = context.load_dataset()
        ...  # fit a model, save it with save_pretrained("out")
        context.log_model(source="out", metrics={"eval_accuracy": 0.93}, labels=["neg", "pos"])
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.events import DatasetSpec, HyperParameters, TrainRequested
from training.errors import INVALID_SPEC, SpecError
from training.protocol import Progress, emit_progress

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from training.data import Splits


@dataclass
class LoggedModel:
    source: Path
    metrics: dict[str, float]
    labels: list[str] | None
    task: str | None
    base_model: str | None


@dataclass
class TrainContext:
    """Everything a custom training handler gets.

    Attributes:
        request: the TrainRequested as sent.
        parameters: the request's `code.parameters`.
        hyperparameters: the request's hyper-parameters (epochs, learning rate, ...).
        base_model: what `from_pretrained` loads (a local folder or a Hub repo id).
        dataset: the request's dataset spec (None when the handler brings its own data).
        output_dir: a folder to save the model in; `log_model()` without `source` logs it.
        work_dir: scratch space for the job.
    """

    request: TrainRequested
    base_model: str
    output_dir: Path
    work_dir: Path
    fetch: Callable[[str], Path]
    report: Callable[[Progress], None] = emit_progress
    metrics: dict[str, float] = field(default_factory=dict)
    logged: LoggedModel | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.request.code.parameters) if self.request.code else {}

    @property
    def hyperparameters(self) -> HyperParameters:
        return self.request.hyperparameters

    @property
    def dataset(self) -> DatasetSpec | None:
        return self.request.dataset

    @property
    def project(self) -> str:
        return self.request.project

    @property
    def name(self) -> str:
        return self.request.name

    def load_dataset(self, *, need_eval: bool = True) -> Splits:
        """The request's dataset as train/eval splits (the built-in recipes' loader)."""
        from training.data import load_splits

        if self.request.dataset is None:
            raise SpecError(INVALID_SPEC, "load_dataset(): the request carries no dataset")
        return load_splits(self.request.dataset, fetch=self.fetch, need_eval=need_eval)

    def log_metric(self, name: str, value: float) -> None:
        """Record one metric of the model that will be logged."""
        if isinstance(value, int | float) and math.isfinite(value):
            self.metrics[name] = float(value)

    def progress(self, *, epoch: float | None = None, step: int | None = None, max_steps: int | None = None,
                 loss: float | None = None, **metrics: float) -> None:
        """Report progress (shown by `modelbus train --wait`)."""
        self.report(Progress(epoch=epoch, step=step, max_steps=max_steps, loss=loss,
                             metrics={k: float(v) for k, v in metrics.items()}))

    def trainer_callback(self) -> TrainerCallback:
        """A transformers `TrainerCallback` that reports progress like the built-in recipes."""
        from training.recipes.common import progress_callback

        return progress_callback(self.report)

    def log_model(
        self,
        source: str | Path | None = None,
        *,
        name: str | None = None,
        kind: str = "huggingface",
        base_model: str | None = None,
        metrics: dict[str, float] | None = None,
        labels: list[str] | None = None,
        task: str | None = None,
    ) -> None:
        """Log the trained model (platform: `project.log_model(name, kind="huggingface", source=...)`).

        Args:
            source: the folder holding the saved model and tokenizer; `output_dir` when omitted.
            name: must be the request's name if given (the version is logged under it).
            kind: only `huggingface` is supported.
            base_model: recorded instead of the request's base model, when given.
            metrics: merged over metrics recorded with `log_metric`.
            labels: class names, for classifiers.
            task: the task the model serves (the request's task when omitted).

        Raises:
            SpecError: the folder does not exist, or name/kind do not match.
        """
        if kind != "huggingface":
            raise SpecError(INVALID_SPEC, f"log_model(kind={kind!r}): only 'huggingface' models are supported")
        if name is not None and name != self.request.name:
            raise SpecError(INVALID_SPEC, f"log_model(name={name!r}): this job logs the model {self.request.name!r}")
        folder = Path(source) if source is not None else self.output_dir
        if not folder.is_absolute():
            folder = Path.cwd() / folder
        if not folder.is_dir() or not any(folder.iterdir()):
            raise SpecError(INVALID_SPEC, f"log_model(source={str(source)!r}): not a folder with the saved model")
        if folder.resolve() != self.output_dir.resolve():
            shutil.copytree(folder, self.output_dir, dirs_exist_ok=True)
        for key, value in (metrics or {}).items():
            self.log_metric(key, value)
        self.logged = LoggedModel(self.output_dir, dict(self.metrics), labels, task, base_model)
