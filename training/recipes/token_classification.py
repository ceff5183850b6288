"""Token classification (NER, tagging): per-word tags become per-token labels on the first sub-word.

The text column holds a list of words (or a string, split on whitespace), the label column a list of
tags of the same length (names or ids).
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

IGNORE = -100


def _words(value: Any) -> list[str]:
    return value.split() if isinstance(value, str) else [str(w) for w in value]


def train(job: RecipeInput) -> RecipeOutput:
    """Fine-tune a token classifier and save model + tokenizer into `job.out_dir`."""
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        set_seed,
    )

    parts = [p for p in (job.splits.train, job.splits.eval) if p is not None]
    tags: list[Any] = []
    for part in parts:
        for words, row_tags in zip(part[job.text_column], part[job.label_column], strict=True):
            if not isinstance(row_tags, list) or len(row_tags) != len(_words(words)):
                raise SpecError(INVALID_DATASET, f"every row needs one tag per word in {job.label_column!r}; "
                                f"found {row_tags!r} for {words!r}")
            tags.extend(row_tags)
    names, encode = label_names(tags, job.labels)

    set_seed(job.hp.seed)
    tokenizer = AutoTokenizer.from_pretrained(job.model.ref, **job.model.kwargs())
    if not tokenizer.is_fast:
        raise SpecError(INVALID_DATASET, "token classification needs a fast tokenizer (word alignment)")

    def prepare(batch: dict[str, list[Any]]) -> dict[str, Any]:
        encoded = tokenizer([_words(w) for w in batch[job.text_column]], is_split_into_words=True,
                            truncation=True, max_length=job.hp.max_length)
        all_labels = []
        for i, row_tags in enumerate(batch[job.label_column]):
            previous, aligned = None, []
            for word in encoded.word_ids(batch_index=i):
                aligned.append(IGNORE if word is None or word == previous else encode(row_tags[word]))
                previous = word
            all_labels.append(aligned)
        encoded["labels"] = all_labels
        return dict(encoded)

    train_set, eval_set = job.splits.tokenized(prepare)

    model = AutoModelForTokenClassification.from_pretrained(
        job.model.ref, **label_config(names), **job.model.kwargs(),
    )

    def compute_metrics(prediction: Any) -> dict[str, float]:
        predicted, expected = predicted_ids(prediction), prediction.label_ids
        keep = expected != IGNORE
        return classification_scores(predicted[keep], expected[keep])

    metrics = fit(job, model, tokenizer, train_set, eval_set, compute_metrics=compute_metrics,
                  data_collator=DataCollatorForTokenClassification(tokenizer))
    return RecipeOutput(metrics, labels=names)
