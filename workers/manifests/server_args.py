"""The model-server flags of a deploy request, shared by the KServe manifest and the local backend.

Both runtimes (KServe's `huggingfaceserver` and modelbus `serving`) take the same flags, so one pure
function decides them and each backend only adds where the model comes from and where to listen.
"""

from __future__ import annotations

from schemas.events import DeployRequested
from schemas.types import ServingBackend


def effective_backend(request: DeployRequested) -> ServingBackend:
    """The `--backend` to run with.

    With `auto`, KServe picks vLLM for any architecture vLLM supports, and a vLLM-served encoder
    loses the v1/v2 endpoints that classifiers and embedders are called through. A request that names
    a non-generative task therefore gets `huggingface` unless it asked for a backend explicitly.
    """
    if request.backend is ServingBackend.auto and request.task is not None and not request.task.generative:
        return ServingBackend.huggingface
    return request.backend


def runtime_args(request: DeployRequested, *, server_batching: bool = False) -> list[str]:
    """Flags for `--model_name`, task, backend and the runtime options (not the model location).

    Args:
        request: the deploy request.
        server_batching: also pass the server-side batching flags, which only modelbus `serving`
            understands (KServe's runtime would reject them).

    Example:
        >>> runtime_args(DeployRequested(service="s", path="hf://a/b", model_name="m"))
        ['--model_name=m']
    """
    opts = request.runtime
    args = [f"--model_name={request.model_name}"]
    if request.task is not None:
        args.append(f"--task={request.task.value}")
    backend = effective_backend(request)
    if backend is not ServingBackend.auto:
        args.append(f"--backend={backend.value}")
    if opts.model_revision:
        args.append(f"--model_revision={opts.model_revision}")
    if opts.tokenizer_revision:
        args.append(f"--tokenizer_revision={opts.tokenizer_revision}")
    if opts.max_model_len is not None:
        args.append(f"--max_model_len={opts.max_model_len}")
    if opts.dtype is not None:
        args.append(f"--dtype={opts.dtype.value}")
    for flag in ("return_probabilities", "return_raw_logits", "disable_lower_case", "disable_special_tokens",
                 "trust_remote_code"):
        if getattr(opts, flag):
            args.append(f"--{flag}")
    if server_batching:
        if opts.max_batch_size is not None:
            args.append(f"--max_batch_size={opts.max_batch_size}")
        if opts.max_batch_wait_ms is not None:
            args.append(f"--max_batch_wait_ms={opts.max_batch_wait_ms:g}")
    args.extend(opts.extra_args)
    return args
