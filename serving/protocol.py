"""Wire formats: v1 and v2 (Open Inference Protocol) and OpenAI request models and responses.

Request bodies are parsed with orjson and validated with these pydantic models; any failure is
an ``InvalidInput`` (400) whose message names the offending field. Responses follow KServe
huggingfaceserver byte for byte where clients depend on it (see the reference notes):

* v1: ``{"predictions": [...]}``, integer dict keys rendered as JSON strings;
* v2: one output ``output-0`` whose datatype and shape come from the nested Python result
  (``int`` -> INT64, ``float`` -> FP64, ``str``/``dict`` -> BYTES with ``str()`` of the value);
* OpenAI: completions, chat completions (and their SSE chunks), embeddings, models.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)


def parse_json(body: bytes) -> Any:
    """Decode a request body; malformed JSON is a 400, not a 500."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc


def validate(model: type[M], payload: Any) -> M:
    """Validate ``payload`` against ``model``; errors become one readable 400 message."""
    if not isinstance(payload, dict):
        raise InvalidInput("invalid request: the body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidInput(f"invalid request: {problems}") from exc


def dumps(payload: Any) -> bytes:
    """JSON with non-string dict keys allowed (``{0: 0.9}`` -> ``{"0": 0.9}``), as KServe's v1."""
    return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


# ---------------------------------------------------------------- v1 / v2


class V2Input(BaseModel):
    """One tensor of an Open Inference Protocol request."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2Request(BaseModel):
    """``POST /v2/models/{name}/infer`` body. Only ``inputs[0]`` is used, as in KServe."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Input] = Field(min_length=1)
    outputs: list[dict[str, Any]] | None = None


class V1Request(BaseModel):
    """``POST /v1/models/{name}:predict`` body: ``instances`` (or ``inputs``, which wins)."""

    model_config = ConfigDict(extra="allow")

    instances: list[Any] | None = None
    inputs: list[Any] | None = None


def texts_from_v1(request: V1Request) -> list[str]:
    """The list of texts of a v1 request."""
    values = request.inputs if request.inputs is not None else request.instances
    if values is None:
        raise InvalidInput("invalid request: expected 'instances' (or 'inputs') with a list of strings")
    return _strings(values, "instances")


def texts_from_v2(request: V2Request) -> list[str]:
    """The list of texts in ``inputs[0]`` (BYTES; nested lists are flattened row-major)."""
    tensor = request.inputs[0]
    if tensor.datatype.upper() != "BYTES":
        raise InvalidInput(
            f"invalid request: input '{tensor.name}' has datatype {tensor.datatype}; text models take BYTES"
        )
    return _strings(_flatten(tensor.data), f"inputs[0] ({tensor.name}).data")


def _flatten(values: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(_flatten(value))
        else:
            flat.append(value)
    return flat


def _strings(values: list[Any], where: str) -> list[str]:
    if not values:
        raise InvalidInput(f"invalid request: {where} is empty")
    if not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"invalid request: {where} must be a list of strings")
    return values


def v1_response(predictions: list[Any]) -> dict[str, Any]:
    return {"predictions": predictions}


def v2_response(*, model_name: str, request_id: str | None, predictions: list[Any]) -> dict[str, Any]:
    """The v2 envelope with one output named ``output-0``."""
    return {
        "model_name": model_name,
        "model_version": None,
        "id": request_id or str(uuid.uuid4()),
        "parameters": None,
        "outputs": [encode_v2_output("output-0", predictions)],
    }


def encode_v2_output(name: str, values: list[Any]) -> dict[str, Any]:
    """Shape, datatype and flattened data of a nested Python result, as numpy would infer them.

    Example:
        >>> encode_v2_output("output-0", [1, 0])["datatype"], encode_v2_output("output-0", [[[0, 3]]])["shape"]
        ('INT64', [1, 1, 2])
    """
    shape = _shape(values)
    if shape is None:  # ragged: one string per row, like numpy's object array of lists
        return {"name": name, "shape": [len(values)], "datatype": "BYTES", "parameters": None,
                "data": [str(v) for v in values]}
    leaves = _leaves(values, len(shape))
    datatype = _datatype(leaves)
    data = leaves if datatype != "BYTES" else [v if isinstance(v, str) else str(v) for v in leaves]
    if datatype == "FP64":
        data = [float(v) for v in data]
    return {"name": name, "shape": shape, "datatype": datatype, "parameters": None, "data": data}


def _shape(values: Any) -> list[int] | None:
    if not isinstance(values, list):
        return []
    if not values:
        return [0]
    inner = [_shape(v) for v in values]
    if any(s is None or s != inner[0] for s in inner):
        return None
    first = inner[0]
    assert first is not None
    return [len(values), *first]


def _leaves(values: Any, depth: int) -> list[Any]:
    if depth == 0:
        return [values]
    out: list[Any] = []
    for value in values:
        out.extend(_leaves(value, depth - 1))
    return out


def _datatype(leaves: list[Any]) -> str:
    if leaves and all(isinstance(v, bool) for v in leaves):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in leaves):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in leaves):
        return "FP64"
    return "BYTES"


# ---------------------------------------------------------------- OpenAI requests


class _OpenAIRequest(BaseModel):
    # Clients send fields this runtime has no use for (user, metadata, ...): ignore them.
    model_config = ConfigDict(extra="ignore")

    model: str


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingFields(_OpenAIRequest):
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = Field(default=None, gt=0)
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(_SamplingFields):
    """``POST /openai/v1/completions``. ``max_tokens`` defaults to 16, as in vLLM's protocol."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_SamplingFields):
    """``POST /openai/v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False


class EmbeddingRequest(_OpenAIRequest):
    """``POST /openai/v1/embeddings``."""

    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


# ---------------------------------------------------------------- OpenAI responses


def new_id() -> str:
    """Response ids are plain uuid4 strings, as KServe's Hugging Face backend returns them."""
    return str(uuid.uuid4())


def usage(prompt_tokens: int, completion_tokens: int | None = None) -> dict[str, int]:
    if completion_tokens is None:
        return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_response(*, response_id: str, model: str, choices: list[dict[str, Any]],
                        usage_info: dict[str, int]) -> dict[str, Any]:
    return {"id": response_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage_info, "system_fingerprint": None}


def completion_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def chat_response(*, response_id: str, model: str, choices: list[dict[str, Any]],
                  usage_info: dict[str, int]) -> dict[str, Any]:
    return {"id": response_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage_info, "system_fingerprint": None}


def chat_choice(index: int, content: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": content, "tool_calls": []},
            "logprobs": None, "finish_reason": finish_reason}


def completion_chunk(*, response_id: str, created: int, model: str, choices: list[dict[str, Any]],
                     usage_info: dict[str, int] | None = None) -> dict[str, Any]:
    return {"id": response_id, "object": "text_completion", "created": created, "model": model,
            "choices": choices, "system_fingerprint": None, "usage": usage_info}


def chat_chunk(*, response_id: str, created: int, model: str, choices: list[dict[str, Any]],
               usage_info: dict[str, int] | None = None) -> dict[str, Any]:
    return {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": choices, "system_fingerprint": None, "usage": usage_info}


def chat_delta_choice(index: int, content: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "delta": {"role": "assistant", "content": content},
            "logprobs": None, "finish_reason": finish_reason}


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event: ``data: {json}`` and a blank line."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def embedding_response(*, model: str, embeddings: list[Any], prompt_tokens: int) -> dict[str, Any]:
    """KServe's shape: note the top-level ``object`` is ``"embedding"`` (OpenAI says ``"list"``)."""
    return {
        "id": new_id(),
        "object": "embedding",
        "created": int(time.time()),
        "model": model,
        "data": [{"index": i, "object": "embedding", "embedding": e} for i, e in enumerate(embeddings)],
        "usage": usage(prompt_tokens),
    }


def models_response(model_name: str, created: int) -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "modelbus"}]}


def openai_error(message: str, status_code: int) -> dict[str, Any]:
    """OpenAI's error object, which the official client turns into a typed exception."""
    kind = "invalid_request_error" if status_code < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": str(status_code)}}
