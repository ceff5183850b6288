"""Tasks the server supports, and how a task is inferred from a model's config.

Mirrors KServe huggingfaceserver's ``task.py``: the task names are the ones accepted by
``--task``, and inference goes by the suffix of ``config.architectures[0]`` so that a model
directory produced by ``save_pretrained`` serves the right endpoints without flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.types import Task  # the contract's task names are the runtime's --task values
from serving.errors import ModelLoadError

# Names KServe knows but does not serve; asking for one gives its error message, not "unknown".
_KNOWN_UNSUPPORTED = ("table_question_answering", "question_answering", "multiple_choice", "time_series_forecast")

# Suffix -> task name, checked in this order (the first match wins), as in KServe.
_ARCHITECTURE_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("TapasForQuestionAnswering", "table_question_answering"),
    ("ForQuestionAnswering", "question_answering"),
    ("ForTokenClassification", "token_classification"),
    ("ForSequenceClassification", "sequence_classification"),
    ("ForMultipleChoice", "multiple_choice"),
    ("ForMaskedLM", "fill_mask"),
    ("ForCausalLM", "text_generation"),
    ("LMHeadModel", "text_generation"),
    ("ForConditionalGeneration", "text2text_generation"),
    ("MTModel", "text2text_generation"),
    ("EncoderDecoderModel", "text2text_generation"),
    ("ForPrediction", "time_series_forecast"),
)


def _supported_list() -> str:
    return ", ".join(t.value for t in Task)


def parse_task(name: str) -> Task:
    """Turn a ``--task`` value into a Task.

    Raises:
        ModelLoadError: the name is unknown or names a task this runtime does not serve.
    """
    normalized = name.strip().lower().replace("-", "_")
    try:
        return Task(normalized)
    except ValueError:
        if normalized in _KNOWN_UNSUPPORTED:
            raise ModelLoadError(
                f"Task {normalized} is not supported. Currently supported tasks are: {_supported_list()}"
            ) from None
        raise ModelLoadError(
            f"Unsupported task: {name}. Currently supported tasks are: {_supported_list()}"
        ) from None


def infer_task(architectures: Sequence[str] | None) -> Task:
    """Infer the task from ``config.architectures`` (the first entry), like KServe.

    Example: ``["BertForSequenceClassification"]`` gives ``Task.sequence_classification``;
    a bare ``["BertModel"]`` raises, because an encoder without a head could be anything.

    Raises:
        ModelLoadError: no architecture, no matching suffix, or an unsupported task.
    """
    if not architectures:
        raise ModelLoadError("Task couldn't be inferred: the model config has no architectures. "
                             "Please manually set `task` option.")
    architecture = architectures[0]
    for suffix, task_name in _ARCHITECTURE_SUFFIXES:
        if architecture.endswith(suffix):
            return parse_task(task_name)
    raise ModelLoadError(
        f"Task couldn't be inferred from {architecture}. Please manually set `task` option."
    )


# Config keys that bound the context length; the smallest one present wins (KServe utils.py).
_MAX_LEN_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
_DEFAULT_MAX_LEN = 2048


def derive_max_model_len(config: dict[str, Any], requested: int | None, *, allow_long: bool = False) -> int:
    """The context length to use: the requested one, checked against what the config allows.

    Raises:
        ModelLoadError: ``requested`` exceeds the config's limit and ``allow_long`` is false
            (``ALLOW_LONG_MAX_MODEL_LEN=1``; position embeddings past the limit would index out of range).
    """
    limits = [int(config[key]) for key in _MAX_LEN_KEYS if isinstance(config.get(key), int)]
    derived = min(limits) if limits else _DEFAULT_MAX_LEN
    if requested is None:
        return derived
    if requested <= 0:
        raise ModelLoadError(f"--max_model_len must be positive, got {requested}")
    if requested > derived and not allow_long:
        raise ModelLoadError(
            f"User-specified max_model_len ({requested}) is greater than the derived max_model_len "
            f"({derived}) from the model config. Set ALLOW_LONG_MAX_MODEL_LEN=1 to allow it."
        )
    return requested
