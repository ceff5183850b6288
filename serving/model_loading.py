"""Shared pieces of loading a transformers model: config, dtype, tokenizer, torch threads.

Kept apart from the task code so that ``encoder.py`` and ``generative.py`` only hold what their
tasks do differently.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from serving.config import ServerConfig
from serving.errors import ModelLoadError

log = logging.getLogger("serving")

_DTYPES = {
    "float32": "float32",
    "float": "float32",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
}


def configure_torch(threads: int | None) -> int:
    """Give torch one intra-op thread per available CPU (or ``threads``) and one inter-op thread.

    The server runs one batch at a time in one worker thread, so intra-op parallelism is where
    the cores go; more threads than cores only adds contention on a small box.
    """
    import torch

    count = threads or len(os.sched_getaffinity(0)) or 1
    torch.set_num_threads(count)
    # Only settable before the first parallel op; a second server in-process keeps the first value.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return count


def quiet_transformers() -> None:
    """Progress bars and advisory warnings from transformers would clutter the server log."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def load_config(path: Path, config: ServerConfig) -> Any:
    """Load ``config.json`` with AutoConfig.

    Raises:
        ModelLoadError: the config cannot be read or names an unknown architecture.
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=config.trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(f"cannot read the model config in {path}: {exc}") from exc


def resolve_dtype(name: str, model_config: Any) -> Any:
    """``--dtype``: ``auto`` takes the config's dtype when it names one, else float32 (CPU)."""
    import torch

    if name == "auto":
        configured = getattr(model_config, "dtype", None)
        if isinstance(configured, torch.dtype):
            return configured
        if isinstance(configured, str) and configured in _DTYPES:
            return getattr(torch, _DTYPES[configured])
        return torch.float32
    if name not in _DTYPES:
        raise ModelLoadError(f"unsupported --dtype {name!r}: use auto, float32, float16, bfloat16, float or half")
    return getattr(torch, _DTYPES[name])


def load_tokenizer(path: Path, config: ServerConfig, **kwargs: Any) -> Any:
    """Load the tokenizer next to the model.

    Raises:
        ModelLoadError: no tokenizer files, or they cannot be parsed.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=config.trust_remote_code, **kwargs
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {path}: {exc}") from exc


def load_weights(model_class: Any, path: Path, config: ServerConfig, model_config: Any) -> Any:
    """``model_class.from_pretrained`` in eval mode with the resolved dtype.

    Raises:
        ModelLoadError: missing or incompatible weights.
    """
    dtype = resolve_dtype(config.dtype, model_config)
    try:
        model = model_class.from_pretrained(
            str(path), dtype=dtype, trust_remote_code=config.trust_remote_code
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load model weights from {path}: {exc}") from exc
    model.eval()
    log.info("loaded %s from %s (dtype %s)", type(model).__name__, path, dtype)
    return model
