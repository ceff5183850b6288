"""What every recipe shares: the resolved base model, Trainer arguments, progress reporting, metrics.

Heavy imports (torch, transformers) happen inside functions, so that a bad spec is reported before
they are paid for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.events import HyperParameters
from schemas.types import ModelURI, URIScheme
from training.errors import INVALID_HYPERPARAMETER, UNKNOWN_BASE_MODEL, SpecError
from training.protocol import Progress, emit_progress

if TYPE_CHECKING:
    from transformers import PretrainedConfig, TrainerCallback, TrainingArguments

    from training.data import Splits

#: Metrics worth keeping in the registry (Trainer also logs runtimes and throughput).
_DROP = ("_runtime", "_samples_per_second", "_steps_per_second", "total_flos")


@dataclass(frozen=True)
class BaseModelRef:
    """A base model as `from_pretrained` takes it: a local folder or a Hub repo id (+ revision)."""

    uri: str
    ref: str
    revision: str | None = None

    def kwargs(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"revision": self.revision} if self.revision else {}
        token = os.environ.get("HF_TOKEN")
        if token and not Path(self.ref).is_dir():
            extra["token"] = token
        return extra


def resolve_base_model(uri: str, fetch: Callable[[str], Path]) -> BaseModelRef:
    """Turn the base model URI into something `from_pretrained` loads; a missing local model is a SpecError."""
    try:
        parsed = ModelURI.parse(uri)
    except ValueError as exc:
        raise SpecError(UNKNOWN_BASE_MODEL, str(exc)) from exc
    if parsed.is_hub:
        return BaseModelRef(uri, parsed.repo, parsed.revision)
    if parsed.scheme in (URIScheme.file, URIScheme.s3):
        try:
            local = fetch(uri)
        except FileNotFoundError as exc:
            raise SpecError(UNKNOWN_BASE_MODEL, f"base model {uri} does not exist") from exc
        if not (local / "config.json").is_file():
            raise SpecError(UNKNOWN_BASE_MODEL, f"base model {uri} is not a Hugging Face model folder "
                            "(no config.json)")
        return BaseModelRef(uri, str(local))
    raise SpecError(UNKNOWN_BASE_MODEL, f"base model {uri}: {parsed.scheme}:// is not loadable by a training job")


def load_config(model: BaseModelRef) -> PretrainedConfig:
    from transformers import AutoConfig

    try:
        config: PretrainedConfig = AutoConfig.from_pretrained(model.ref, **model.kwargs())
    except (OSError, ValueError) as exc:
        raise SpecError(UNKNOWN_BASE_MODEL, f"cannot load base model {model.uri}: {exc}") from exc
    return config


def check_max_length(config: PretrainedConfig, hp: HyperParameters) -> None:
    """A max_length beyond the model's position embeddings fails deep in the forward pass; refuse it here."""
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(limit, int) and hp.max_length > limit:
        raise SpecError(INVALID_HYPERPARAMETER, f"max_length {hp.max_length} exceeds the base model's "
                        f"maximum of {limit} positions")


def training_arguments(hp: HyperParameters, work_dir: Path, *, n_train: int, has_eval: bool) -> TrainingArguments:
    """Trainer arguments from the request's hyper-parameters: no checkpoints, no external reporting."""
    import torch
    from transformers import TrainingArguments

    steps_per_epoch = max(1, math.ceil(n_train / (hp.batch_size * hp.gradient_accumulation_steps)))
    total_steps = max(1, math.ceil(steps_per_epoch * hp.epochs))
    log_every = max(1, total_steps // 20)
    eval_strategy = hp.eval_strategy if has_eval else "no"
    return TrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        num_train_epochs=hp.epochs,
        learning_rate=hp.learning_rate,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        weight_decay=hp.weight_decay,
        warmup_steps=hp.warmup_ratio,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        eval_strategy=eval_strategy,
        eval_steps=max(1, total_steps // 5) if eval_strategy == "steps" else None,
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=log_every,
        report_to="none",
        disable_tqdm=True,
        seed=hp.seed,
        data_seed=hp.seed,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def progress_callback(report: Callable[[Progress], None] = emit_progress) -> TrainerCallback:
    """A Trainer callback that turns each log entry into a progress line."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            logs = logs or {}
            loss = logs.get("loss")
            evals = {k: float(v) for k, v in logs.items() if k.startswith("eval_") and isinstance(v, int | float)
                     and not k.endswith(_DROP)}
            if loss is None and not evals:
                return
            report(Progress(epoch=state.epoch, step=state.global_step, max_steps=state.max_steps,
                            loss=float(loss) if isinstance(loss, int | float) else None, metrics=evals))

    return _Progress()


def quiet(trainer: Any) -> Any:
    """Drop Trainer's own stdout printer: the progress lines already carry what it would print."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def fit(job: RecipeInput, model: Any, tokenizer: Any, train_set: Any, eval_set: Any | None, *,
        data_collator: Any = None, compute_metrics: Callable[[Any], dict[str, float]] | None = None,
        ) -> dict[str, float]:
    """Train `model`, evaluate once more at the end when there is an eval split, and save model and
    tokenizer into `job.out_dir`. Returns the kept metrics of training and the final evaluation."""
    from transformers import Trainer

    trainer = quiet(Trainer(
        model=model,
        args=training_arguments(job.hp, job.work_dir, n_train=len(train_set), has_eval=eval_set is not None),
        train_dataset=train_set, eval_dataset=eval_set, processing_class=tokenizer,
        data_collator=data_collator, compute_metrics=compute_metrics, callbacks=[progress_callback(job.report)],
    ))
    outcome = trainer.train()
    final = trainer.evaluate() if eval_set is not None else {}
    trainer.save_model(str(job.out_dir))
    tokenizer.save_pretrained(str(job.out_dir))
    return keep_metrics(outcome.metrics, final)


def predicted_ids(prediction: Any) -> Any:
    """The arg-max class ids of a Trainer prediction (its logits may come first in a tuple)."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return logits.argmax(-1)


def keep_metrics(*sources: dict[str, Any]) -> dict[str, float]:
    """Numeric, finite metrics without runtime/throughput noise."""
    kept: dict[str, float] = {}
    for source in sources:
        for key, value in source.items():
            if isinstance(value, int | float) and math.isfinite(value) and not key.endswith(_DROP):
                kept[key] = float(value)
    return kept


def classification_scores(predicted: Any, expected: Any) -> dict[str, float]:
    """Accuracy and macro F1 over aligned 1-D arrays of class ids."""
    import numpy as np

    predicted, expected = np.asarray(predicted), np.asarray(expected)
    if expected.size == 0:
        return {}
    f1s = []
    for cls in np.union1d(predicted, expected):
        tp = float(np.sum((predicted == cls) & (expected == cls)))
        fp = float(np.sum((predicted == cls) & (expected != cls)))
        fn = float(np.sum((predicted != cls) & (expected == cls)))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(predicted == expected)), "f1": float(np.mean(f1s))}


@dataclass
class RecipeInput:
    """What a recipe needs: the request's settings, data, base model and where to write."""

    hp: HyperParameters
    model: BaseModelRef
    splits: Splits
    text_column: str
    label_column: str
    text_pair_column: str | None
    labels: list[str] | None
    out_dir: Path
    work_dir: Path
    report: Callable[[Progress], None] = emit_progress


@dataclass
class RecipeOutput:
    metrics: dict[str, float]
    labels: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def label_names(values: list[Any], declared: list[str] | None) -> tuple[list[str], Callable[[Any], int]]:
    """Class names and an encoder from dataset label values (names or ids) to ids.

    With `declared` labels, string values must be among them and ints index them; without, string values
    are sorted into classes and ints are their own ids.
    """
    from training.errors import INVALID_DATASET

    present = {v for v in values if v is not None}
    if any(isinstance(v, float) and math.isnan(v) for v in present):
        raise SpecError(INVALID_DATASET, "the label column has empty values")
    strings = all(isinstance(v, str) for v in present)
    ints = all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in present)
    if not (strings or ints):
        raise SpecError(INVALID_DATASET, "labels must be all class names or all class ids")
    if declared is not None:
        names = list(declared)
        if strings:
            unknown = sorted(present - set(names))
            if unknown:
                raise SpecError(INVALID_DATASET, f"labels {unknown[:5]} are not among the declared labels {names}")
            index = {n: i for i, n in enumerate(names)}
            return names, lambda v: index[v]
        out_of_range = sorted(int(v) for v in present if not 0 <= int(v) < len(names))
        if out_of_range:
            raise SpecError(INVALID_DATASET,
                            f"label ids {out_of_range[:5]} are outside the {len(names)} declared labels")
        return names, int
    if strings:
        names = sorted(present)
        index = {n: i for i, n in enumerate(names)}
        return names, lambda v: index[v]
    if any(int(v) < 0 for v in present):
        raise SpecError(INVALID_DATASET, "label ids must not be negative")
    return [str(i) for i in range(int(max(present)) + 1 if present else 0)], int


def label_config(names: list[str]) -> dict[str, Any]:
    """`from_pretrained` arguments for a fresh head over `names`, stored so the served model speaks them."""
    return {"num_labels": len(names), "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)}, "ignore_mismatched_sizes": True}
