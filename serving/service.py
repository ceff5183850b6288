"""The served model: load it from a ``ServerConfig``, then run requests through the batcher.

``ModelService`` owns the three things every request shares: the loaded model, the single
worker thread its torch code runs in (so the event loop never blocks on a forward pass), and
the ``DynamicBatcher`` that groups concurrent requests into one call of that thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serving.batching import DynamicBatcher
from serving.config import ServerConfig
from serving.errors import InferenceFailed, ModelLoadError, ServingError, UnsupportedOperation
from serving.loader import resolve_model
from serving.metrics import ServingMetrics
from serving.tasks import Task, derive_max_model_len, infer_task

if TYPE_CHECKING:
    from serving.encoder import EncoderModel, EncoderResult
    from serving.generative import GenerativeModel
    from serving.sampling import GenerationResult, GenerationRow, SamplingParams

log = logging.getLogger("serving")

_ENCODE_KEY = "encode"


def load_model(config: ServerConfig) -> EncoderModel | GenerativeModel:
    """Resolve the source, pick the task and load tokenizer and weights.

    Raises:
        ModelLoadError: anything that stops the model from being served, with a readable message.
    """
    if config.backend not in ("auto", "huggingface", "vllm"):
        raise ModelLoadError(f"unknown --backend {config.backend!r}: use auto, huggingface or vllm")
    if config.backend == "vllm":
        raise ModelLoadError("the vllm backend is not available in modelbus serving; "
                             "use --backend huggingface (or auto)")
    if config.return_probabilities and config.return_raw_logits:
        raise ModelLoadError("--return_probabilities and --return_raw_logits are mutually exclusive")
    from serving.model_loading import configure_torch, load_config, quiet_transformers

    quiet_transformers()
    threads = configure_torch(config.torch_threads)
    resolved = resolve_model(config.source, storage=config.storage, revision=config.model_revision)
    tokenizer_path = None
    if config.tokenizer_revision and config.tokenizer_revision != config.model_revision:
        tokenizer_path = resolve_model(config.source, storage=config.storage,
                                       revision=config.tokenizer_revision).path
    model_config = load_config(resolved.path, config)
    architectures = getattr(model_config, "architectures", None)
    task = config.task or infer_task(architectures)
    max_len = derive_max_model_len(model_config.to_dict(), config.max_model_len,
                                   allow_long=config.allow_long_max_model_len)
    log.info("loading %s from %s as %s (max_model_len %d, %d torch threads)",
             config.model_name, resolved.source, task.value, max_len, threads)
    if task.generative:
        from serving.generative import GenerativeModel

        return GenerativeModel.load(resolved.path, task=task, config=config, model_config=model_config,
                                    max_model_len=max_len, tokenizer_path=tokenizer_path)
    from serving.encoder import EncoderModel

    return EncoderModel.load(resolved.path, task=task, config=config, model_config=model_config,
                             max_model_len=max_len, tokenizer_path=tokenizer_path)


@dataclass(frozen=True)
class _EncodeJob:
    texts: list[str]


@dataclass(frozen=True)
class _GenerateJob:
    rows: list[GenerationRow]
    params: SamplingParams


class ModelService:
    """Runs requests against one loaded model, batching concurrent ones.

    Args:
        model: the loaded encoder or generative model.
        name: the served model name (``--model_name``).
        max_batch_size / max_wait: batching policy (see ``DynamicBatcher``).
        metrics: where batch sizes, durations and queue depth are recorded.
    """

    def __init__(self, model: EncoderModel | GenerativeModel, *, name: str, max_batch_size: int,
                 max_wait: float, metrics: ServingMetrics) -> None:
        self.model = model
        self.name = name
        self.task: Task = model.task
        self.created = int(time.time())
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._batcher: DynamicBatcher[Any, Any] = DynamicBatcher(
            self._run,
            max_batch_size=max_batch_size,
            max_wait=max_wait,
            on_batch=metrics.batch_size.observe,
            on_queue_depth=metrics.queue_depth.set,
        )

    @property
    def encoder(self) -> EncoderModel:
        if self.task.generative:
            raise UnsupportedOperation(
                f"Model {self.name} ({self.task.value}) does not support inference with v1/v2 or embeddings; "
                f"use the OpenAI completions or chat completions endpoint"
            )
        return self.model  # type: ignore[return-value]

    @property
    def generator(self) -> GenerativeModel:
        if not self.task.generative:
            raise UnsupportedOperation(
                f"Model {self.name} ({self.task.value}) does not support Completions API; "
                f"use /v2/models/{self.name}/infer or /v1/models/{self.name}:predict"
            )
        return self.model  # type: ignore[return-value]

    async def predict(self, texts: list[str]) -> EncoderResult:
        """Predictions for ``texts`` (one request), batched with concurrent requests.

        Raises:
            UnsupportedOperation: the model is generative.
            InferenceFailed: the forward pass raised.
        """
        self.encoder  # noqa: B018 - raises for generative models before anything is queued
        result: EncoderResult = await self._batcher.submit(_EncodeJob(texts), rows=len(texts), key=_ENCODE_KEY)
        return result

    async def generate(self, rows: list[GenerationRow], params: SamplingParams,
                       request_id: str) -> list[GenerationResult]:
        """Generated text for each row of one request, batched with compatible requests."""
        results: list[GenerationResult] = await self._batcher.submit(
            _GenerateJob(rows, params), rows=len(rows), key=params.batch_key(request_id)
        )
        return results

    async def close(self) -> None:
        await self._batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, jobs: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            return await loop.run_in_executor(self._executor, self._run_sync, jobs)
        except ServingError:
            raise
        except Exception as exc:
            log.exception("batch of %d request(s) failed", len(jobs))
            raise InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._metrics.batch_duration.observe(time.perf_counter() - started)

    def _run_sync(self, jobs: list[Any]) -> list[Any]:
        if isinstance(jobs[0], _EncodeJob):
            return list(self.encoder.predict_batch([job.texts for job in jobs]))
        rows = [row for job in jobs for row in job.rows]
        results = self.generator.generate_batch(rows, jobs[0].params)
        split: list[Any] = []
        start = 0
        for job in jobs:
            split.append(results[start:start + len(job.rows)])
            start += len(job.rows)
        return split
