"""``python -m serving`` / ``modelbus serve``: parse KServe huggingfaceserver's flags, load, serve.

The model is loaded before the HTTP server binds its port, as in KServe: a load failure prints
one ``error:`` line and exits with status 1 without ever listening, and a server that answers
is ready. Booleans accept both ``--flag`` and ``--flag true|false`` (platforms pass pairs), and
every ``--snake_case`` flag also answers to ``--dashed-form``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from serving.config import (
    DEFAULT_MODEL_DIR,
    ServerConfig,
    StorageOptions,
    allow_long_max_model_len,
    openai_prefix_from_env,
)
from serving.errors import ModelLoadError
from serving.tasks import parse_task

log = logging.getLogger("serving")

_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f"}

# KServe model-server flags that do not apply here; accepted so that the same argument lists work.
_IGNORED_FLAGS = ("--grpc_port", "--enable_grpc", "--workers", "--max_threads", "--enable_docs_url",
                  "--enable_latency_logging", "--disable_log_requests", "--max_log_len",
                  "--return_token_type_ids")


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {number}")
    return number


def _names(flag: str, *aliases: str) -> list[str]:
    names = [flag, *aliases]
    dashed = flag.replace("_", "-")
    if dashed != flag:
        names.append(dashed)
    return names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by ``modelbus serve --help``)."""
    parser = argparse.ArgumentParser(
        prog="modelbus serve",
        description="Serve a Hugging Face model with KServe huggingfaceserver's v1/v2 and OpenAI "
                    "endpoints, batching concurrent requests on the server side.",
    )

    def flag(name: str, *aliases: str, **kwargs: Any) -> None:
        parser.add_argument(*_names(name, *aliases), **kwargs)

    def switch(name: str, help_text: str) -> None:
        flag(name, nargs="?", const=True, default=False, type=_bool, metavar="true|false", help=help_text)

    flag("--model_name", default="model", help="name the model is served under (default: model)")
    flag("--model_id", help="model source: org/name, hf://org/name[:rev], huggingface://..., s3://bucket/key/, "
                            "file:///abs/path or a directory")
    flag("--model_dir", default=DEFAULT_MODEL_DIR, help="model directory or URI, used when --model_id is absent")
    flag("--model_revision", help="Hugging Face revision of the model")
    flag("--tokenizer_revision", help="Hugging Face revision of the tokenizer")
    flag("--task", help="task; inferred from config.architectures when absent")
    flag("--backend", default="auto", choices=["auto", "huggingface", "vllm"],
         help="inference backend; only huggingface is available (auto selects it)")
    flag("--max_model_len", "--max_length", dest="max_model_len", type=_positive_int,
         help="context length (default: from the model config)")
    flag("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16", "float", "half"])
    probabilities = parser.add_mutually_exclusive_group()
    probabilities.add_argument(*_names("--return_probabilities"), nargs="?", const=True, default=False,
                               type=_bool, metavar="true|false",
                               help="classification: label -> probability (4 decimals) instead of argmax")
    probabilities.add_argument(*_names("--return_raw_logits"), nargs="?", const=True, default=False,
                               type=_bool, metavar="true|false",
                               help="classification: label -> raw logit instead of argmax")
    switch("--disable_lower_case", "do not lower-case inputs (cased encoders)")
    switch("--disable_special_tokens", "tokenize without special tokens")
    switch("--trust_remote_code", "allow custom model code from the model repository")
    flag("--http_port", type=int, default=8080, help="HTTP port (default: 8080)")
    flag("--host", default="0.0.0.0", help="interface to bind (default: all)")
    flag("--max_batch_size", type=_positive_int, default=32,
         help="most rows per batched forward pass; 1 turns batching off (default: 32)")
    flag("--max_batch_wait_ms", type=_non_negative_float, default=0.0,
         help="how long the oldest waiting request may wait for a batch to fill; with 0, requests that "
              "queue while a batch runs form the next one (default: 0)")
    flag("--torch_threads", type=_positive_int, help="torch intra-op threads (default: available CPUs)")
    flag("--log_level", default="info", choices=["debug", "info", "warning", "error"])
    for ignored in _IGNORED_FLAGS:
        flag(ignored, nargs="?", const=None, help=argparse.SUPPRESS)
    return parser


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ServerConfig:
    """Combine parsed flags with the environment into a ``ServerConfig``.

    Raises:
        ModelLoadError: ``--task`` names an unknown or unsupported task.
    """
    return ServerConfig(
        model_name=args.model_name,
        model_id=args.model_id,
        model_dir=args.model_dir,
        model_revision=args.model_revision,
        tokenizer_revision=args.tokenizer_revision,
        task=parse_task(args.task) if args.task else None,
        backend=args.backend,
        max_model_len=args.max_model_len,
        dtype=args.dtype,
        return_probabilities=args.return_probabilities,
        return_raw_logits=args.return_raw_logits,
        disable_lower_case=args.disable_lower_case,
        disable_special_tokens=args.disable_special_tokens,
        trust_remote_code=args.trust_remote_code,
        host=args.host,
        http_port=args.http_port,
        max_batch_size=args.max_batch_size,
        max_batch_wait_ms=args.max_batch_wait_ms,
        torch_threads=args.torch_threads,
        openai_route_prefix=openai_prefix_from_env(environ),
        allow_long_max_model_len=allow_long_max_model_len(environ),
        log_level=args.log_level,
        storage=StorageOptions.from_env(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Load the model, then serve it until interrupted.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 after a clean shutdown, 1 when the model cannot be loaded (nothing listened).

    Example:
        ``main(["--model_name", "sst2", "--model_dir", "/models/sst2", "--http_port", "8080"])``
    """
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args, os.environ)
        from serving.service import load_model

        model = load_model(config)
    except ModelLoadError as exc:
        print(f"error: cannot serve model {args.model_name!r}: {exc}", file=sys.stderr, flush=True)
        return 1
    serve(model, config)
    return 0


def serve(model: Any, config: ServerConfig) -> None:
    """Run the HTTP server for an already loaded model (blocks until shutdown)."""
    import uvicorn

    from serving.app import create_app
    from serving.metrics import ServingMetrics
    from serving.service import ModelService

    metrics = ServingMetrics(config.model_name)
    service = ModelService(model, name=config.model_name, max_batch_size=config.max_batch_size,
                           max_wait=config.max_batch_wait_ms / 1000, metrics=metrics)
    app = create_app(service, metrics=metrics, openai_prefix=config.openai_route_prefix)
    log.info("serving %s (%s) on %s:%d, max_batch_size %d, max_batch_wait_ms %g",
             config.model_name, model.task.value, config.host, config.http_port,
             config.max_batch_size, config.max_batch_wait_ms)
    uvicorn.run(app, host=config.host, port=config.http_port, log_level=config.log_level,
                access_log=config.log_level == "debug", timeout_keep_alive=65)
