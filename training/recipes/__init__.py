"""The built-in training recipes, one per task, all driven by transformers' `Trainer`."""

from __future__ import annotations

from collections.abc import Callable

from schemas.types import Task
from training.recipes import causal_lm, classification, token_classification
from training.recipes.common import RecipeInput, RecipeOutput

RECIPES: dict[Task, Callable[[RecipeInput], RecipeOutput]] = {
    Task.sequence_classification: classification.train,
    Task.token_classification: token_classification.train,
    Task.text_generation: causal_lm.train,
}

#: Whether the recipe needs a label column.
NEEDS_LABELS = {Task.sequence_classification, Task.token_classification}

__all__ = ["NEEDS_LABELS", "RECIPES", "RecipeInput", "RecipeOutput"]
