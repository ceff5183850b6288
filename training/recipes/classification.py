"""Sequence classification: a base encoder plus a labelled text dataset become a classifier.

The platform's canonical fine-tune (a BERT-like base, `num_labels`, text and label columns). Label names
are stored in the model config (`id2label`), so the served model answers with names a user recognises.
"""

from __future__ import annotations

from typing import Any

from training.errors import INVALID_DATASET, SpecError
from training.recipes.common import (
    RecipeInput,
    RecipeOutput,
    classification_scores,
    fit,
    label_config,
    label_names,
    predicted_ids,
)


def train(job: RecipeInput) -> RecipeOutput:
    """Fine-tune `job.model` on `job.splits` and save model + tokenizer into `job.out_dir`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    values = list(job.splits.train[job.label_column])
    if job.splits.eval is not None:
        values += list(job.splits.eval[job.label_column])
    names, encode = label_names(values, job.labels)
    if len(names) < 2:
        raise SpecError(INVALID_DATASET, f"sequence classification needs at least 2 classes, found {names}")

    set_seed(job.hp.seed)
    tokenizer = AutoTokenizer.from_pretrained(job.model.ref, **job.model.kwargs())

    def prepare(batch: dict[str, list[Any]]) -> dict[str, Any]:
        pair = batch[job.text_pair_column] if job.text_pair_column else None
        encoded = tokenizer([str(t) for t in batch[job.text_column]],
                            [str(t) for t in pair] if pair is not None else None,
                            truncation=True, max_length=job.hp.max_length)
        encoded["labels"] = [encode(v) for v in batch[job.label_column]]
        return dict(encoded)

    train_set, eval_set = job.splits.tokenized(prepare)

    model = AutoModelForSequenceClassification.from_pretrained(
        job.model.ref, **label_config(names), **job.model.kwargs(),
    )

    def compute_metrics(prediction: Any) -> dict[str, float]:
        return classification_scores(predicted_ids(prediction), prediction.label_ids)

    metrics = fit(job, model, tokenizer, train_set, eval_set, compute_metrics=compute_metrics)
    return RecipeOutput(metrics, labels=names)
