"""OpenAI-compatible routes: completions, chat completions (both with SSE streaming), embeddings, models.

Semantics follow KServe huggingfaceserver's Hugging Face backend, with these choices where it
is silent or quirky (documented in docs/serving.md):

* ``temperature`` absent or 0 means greedy decoding; ``top_p``, ``seed``, ``stop``, ``max_tokens``,
  ``presence_penalty`` (as ``repetition_penalty = 1 + presence_penalty``), ``logit_bias`` and
  vLLM's ``top_k``/``repetition_penalty`` extensions are honoured; ``n > 1``, ``best_of``,
  ``logprobs``, ``suffix`` and ``frequency_penalty > 0`` are refused with a 400.
* ``finish_reason`` is ``"stop"`` for EOS or a stop sequence and ``"length"`` when ``max_tokens``
  ran out (OpenAI's meaning; KServe reports ``"length"`` for EOS).
* ``usage`` counts each prompt's own tokens (not padded) and the tokens generated.
* Streams send ``data: {chunk}\\n\\n`` events with text deltas, a final chunk carrying
  ``finish_reason``, a usage chunk when ``stream_options.include_usage`` is set, then
  ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from serving import protocol
from serving.errors import InvalidInput, ModelNotFound, NotImplementedFeature, UnsupportedOperation
from serving.sampling import GenerationResult, GenerationRow, SamplingParams
from serving.service import ModelService
from serving.tasks import Task

if TYPE_CHECKING:
    from serving.generative import GenerativeModel

_COMPLETION_DEFAULT_MAX_TOKENS = 16


def register_openai_routes(
    app: FastAPI,
    *,
    service: ModelService,
    root: str,
    read_json: Callable[[Request], Awaitable[Any]],
    json_response: Callable[[Any], Response],
) -> None:
    """Add the OpenAI routes under ``root`` (e.g. ``/openai/v1``)."""

    def respond(result: dict[str, Any] | AsyncIterator[bytes]) -> Response:
        if isinstance(result, dict):
            return json_response(result)
        return StreamingResponse(result, media_type="text/event-stream")

    @app.get(f"{root}/models")
    async def list_models() -> Response:
        return json_response(protocol.models_response(service.name, service.created))

    @app.get(f"{root}/models/{{model_name}}")
    async def model_health(model_name: str) -> Response:
        _check_model(model_name, service)
        return json_response(protocol.models_response(service.name, service.created)["data"][0])

    @app.post(f"{root}/completions", response_model=None)
    async def completions(request: Request) -> Response:
        return respond(await create_completion(await read_json(request), service=service))

    @app.post(f"{root}/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        return respond(await create_chat_completion(await read_json(request), service=service))

    @app.post(f"{root}/embeddings")
    async def embeddings(request: Request) -> Response:
        return json_response(await create_embedding(await read_json(request), service=service))

    @app.post(f"{root}/rerank")
    async def rerank() -> Response:
        raise NotImplementedFeature("Rerank is not implemented by the huggingface backend")


def _check_model(name: str, service: ModelService) -> None:
    if name != service.name:
        raise ModelNotFound(name)


async def create_completion(payload: Any, *, service: ModelService) -> dict[str, Any] | AsyncIterator[bytes]:
    """``POST /completions``: the response body, or the SSE byte stream when ``stream`` is set."""
    body = protocol.validate(protocol.CompletionRequest, payload)
    _check_model(body.model, service)
    generator = service.generator
    _refuse_unsupported(body)
    if body.best_of not in (None, 1):
        raise InvalidInput("'best_of' is not supported")
    if body.suffix:
        raise InvalidInput("'suffix' is not supported")
    if body.echo and generator.is_encoder_decoder:
        raise InvalidInput("'echo' is not supported by encoder-decoder models")
    prompts = _prompts(generator, body.prompt)
    max_tokens = body.max_tokens or _COMPLETION_DEFAULT_MAX_TOKENS
    rows = [_row(generator, ids, max_tokens, body.stop_sequences()) for _, ids in prompts]
    echoes = [text if body.echo else "" for text, _ in prompts]
    request_id = protocol.new_id()
    params = _sampling(body, generator)
    if body.stream:
        return _stream(service, rows, params, request_id, body=body, chat=False, echoes=echoes)
    results = await service.generate(rows, params, request_id)
    choices = [protocol.completion_choice(i, echoes[i] + r.text, r.finish_reason) for i, r in enumerate(results)]
    return protocol.completion_response(
        response_id=request_id, model=body.model, choices=choices, usage_info=_usage(results))


async def create_chat_completion(payload: Any, *, service: ModelService) -> dict[str, Any] | AsyncIterator[bytes]:
    """``POST /chat/completions``: messages rendered with the chat template (or the fallback)."""
    body = protocol.validate(protocol.ChatCompletionRequest, payload)
    _check_model(body.model, service)
    generator = service.generator
    if body.n != 1:
        raise InvalidInput("n != 1 is not supported")
    _refuse_unsupported(body)
    prompt, templated = generator.render_chat(
        [_message(m) for m in body.messages],
        chat_template=body.chat_template,
        add_generation_prompt=body.add_generation_prompt,
        continue_final_message=body.continue_final_message,
        tools=body.tools,
        template_kwargs=body.chat_template_kwargs,
    )
    ids = generator.encode(prompt, add_special_tokens=False if templated else None)
    max_tokens = body.max_completion_tokens or body.max_tokens or max(1, generator.max_model_len - len(ids))
    rows = [_row(generator, ids, max_tokens, body.stop_sequences())]
    request_id = protocol.new_id()
    params = _sampling(body, generator)
    if body.stream:
        return _stream(service, rows, params, request_id, body=body, chat=True, echoes=[""])
    results = await service.generate(rows, params, request_id)
    choices = [protocol.chat_choice(i, r.text, r.finish_reason) for i, r in enumerate(results)]
    return protocol.chat_response(
        response_id=request_id, model=body.model, choices=choices, usage_info=_usage(results))


async def create_embedding(payload: Any, *, service: ModelService) -> dict[str, Any]:
    """``POST /embeddings``: mean-pooled, L2-normalised vectors (floats or base64 float32)."""
    body = protocol.validate(protocol.EmbeddingRequest, payload)
    _check_model(body.model, service)
    encoder = service.encoder
    if service.task is not Task.text_embedding:
        raise UnsupportedOperation(f"Model {service.name} ({service.task.value}) does not support Embeddings API")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise InvalidInput("'input' must not be empty")
    if not all(isinstance(t, str) for t in texts):
        raise NotImplementedFeature("'input' as token lists is not supported")
    hidden = getattr(encoder.model.config, "hidden_size", None)
    if body.dimensions is not None and body.dimensions != hidden:
        raise InvalidInput(f"'dimensions' must be {hidden} for this model (no reduction is applied)")
    result = await service.predict(texts)  # type: ignore[arg-type]
    vectors: list[Any] = result.predictions
    if body.encoding_format == "base64":
        vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii") for v in vectors]
    return protocol.embedding_response(model=body.model, embeddings=vectors, prompt_tokens=result.prompt_tokens)


def _refuse_unsupported(body: protocol.CompletionRequest | protocol.ChatCompletionRequest) -> None:
    if body.n != 1:
        raise InvalidInput("'n' > 1 is not supported")
    if body.frequency_penalty:
        raise InvalidInput("'frequency_penalty' is not supported")
    if body.logprobs not in (None, False, 0):
        raise InvalidInput("'logprobs' is not supported")


def _sampling(body: protocol.CompletionRequest | protocol.ChatCompletionRequest,
              generator: GenerativeModel) -> SamplingParams:
    repetition = body.repetition_penalty
    if repetition is None and body.presence_penalty and body.presence_penalty > 0:
        repetition = 1.0 + body.presence_penalty
    bias: list[tuple[int, float]] = []
    vocab = len(generator.tokenizer)
    for key, value in (body.logit_bias or {}).items():
        if not key.lstrip("-").isdigit() or not 0 <= int(key) < vocab:
            raise InvalidInput(f"'logit_bias' key {key!r} is not a token id of this model")
        bias.append((int(key), float(value)))
    return SamplingParams(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k if body.top_k and body.top_k > 0 else None,
        repetition_penalty=repetition,
        seed=body.seed,
        logit_bias=tuple(sorted(bias)),
    )


def _prompts(generator: GenerativeModel, prompt: Any) -> list[tuple[str, list[int]]]:
    """(text, token ids) per prompt; a prompt may be text or token ids, one or a list."""
    if isinstance(prompt, str):
        items: list[Any] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        items = [prompt]
    else:
        items = list(prompt)
    if not items:
        raise InvalidInput("'prompt' must not be empty")
    out: list[tuple[str, list[int]]] = []
    for item in items:
        if isinstance(item, str):
            out.append((item, generator.encode(item)))
        else:
            out.append((generator.decode(item), list(item)))
    return out


def _row(generator: GenerativeModel, ids: list[int], max_tokens: int, stop: tuple[str, ...]) -> GenerationRow:
    if not ids:
        bos = generator.tokenizer.bos_token_id
        if bos is None:
            raise InvalidInput("the prompt is empty")
        ids = [bos]
    vocab = len(generator.tokenizer)
    if any(not 0 <= i < vocab for i in ids):
        raise InvalidInput(f"prompt token ids must be in [0, {vocab})")
    limit = generator.max_model_len
    if len(ids) + max_tokens > limit:
        raise InvalidInput(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{len(ids) + max_tokens} tokens ({len(ids)} in the messages, {max_tokens} in the completion). "
            "Please reduce the length of the messages or completion."
        )
    return GenerationRow(prompt_ids=ids, max_new_tokens=max_tokens, stop=stop)


def _message(message: protocol.ChatMessage) -> dict[str, Any]:
    """A message for the chat template: content parts joined into text (only text parts allowed)."""
    content = message.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidInput(f"message content part of type {part.get('type')!r} is not supported")
            texts.append(part["text"])
        content = "".join(texts)
    extra = message.model_extra or {}
    return {**extra, "role": message.role, "content": content or ""}


def _usage(results: list[GenerationResult]) -> dict[str, int]:
    return protocol.usage(sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results))


async def _stream(service: ModelService, rows: list[GenerationRow], params: SamplingParams, request_id: str,
                  *, body: protocol.CompletionRequest | protocol.ChatCompletionRequest, chat: bool,
                  echoes: list[str]) -> AsyncIterator[bytes]:
    """Server-sent events for a streamed completion; deltas arrive from the worker thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
    for index, row in enumerate(rows):
        row.on_delta = _threadsafe_sink(loop, queue, index)
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage_info: dict[str, int] | None = None) -> bytes:
        make = protocol.chat_chunk if chat else protocol.completion_chunk
        return protocol.sse(make(response_id=request_id, created=created, model=body.model,
                                 choices=choices, usage_info=usage_info))

    def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
        if chat:
            return protocol.chat_delta_choice(index, text, finish_reason)
        return protocol.completion_choice(index, text, finish_reason)

    task = asyncio.ensure_future(service.generate(rows, params, request_id))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        for index, echo in enumerate(echoes):
            if echo:
                yield chunk([choice(index, echo, None)])
        while (item := await queue.get()) is not None:
            yield chunk([choice(item[0], item[1], None)])
        try:
            results = task.result()
        except Exception as exc:
            status = getattr(exc, "status_code", 500)
            message = getattr(exc, "message", f"{type(exc).__name__}: {exc}")
            yield protocol.sse(protocol.openai_error(message, status))
            yield protocol.SSE_DONE
            return
        for index, result in enumerate(results):
            yield chunk([choice(index, "", result.finish_reason)])
        if body.stream_options is not None and body.stream_options.include_usage:
            yield chunk([], _usage(results))
        yield protocol.SSE_DONE
    finally:
        # A client that goes away stops its rows at the next token instead of at max_tokens.
        for row in rows:
            row.cancelled = True
        if not task.done():
            task.cancel()


def _threadsafe_sink(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[int, str] | None],
                     index: int) -> Callable[[str], None]:
    def sink(delta: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (index, delta))

    return sink
