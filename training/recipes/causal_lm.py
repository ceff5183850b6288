"""Causal language-model fine-tuning: continue training a generative model on a text column.

Each row is one training sequence, truncated to `max_length`; padding is masked out of the loss. The
evaluation reports loss and perplexity.
"""

from __future__ import annotations

import math
from typing import Any

from training.recipes.common import RecipeInput, RecipeOutput, fit


def train(job: RecipeInput) -> RecipeOutput:
    """Fine-tune a causal LM and save model + tokenizer into `job.out_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, set_seed

    set_seed(job.hp.seed)
    tokenizer = AutoTokenizer.from_pretrained(job.model.ref, **job.model.kwargs())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    def prepare(batch: dict[str, list[Any]]) -> dict[str, Any]:
        return dict(tokenizer([str(t) for t in batch[job.text_column]], truncation=True,
                              max_length=job.hp.max_length))

    train_set, eval_set = job.splits.tokenized(prepare)

    model = AutoModelForCausalLM.from_pretrained(job.model.ref, **job.model.kwargs())
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    metrics = fit(job, model, tokenizer, train_set, eval_set,
                  data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    if "eval_loss" in metrics and metrics["eval_loss"] < 50:
        metrics["eval_perplexity"] = math.exp(metrics["eval_loss"])
    return RecipeOutput(metrics)
