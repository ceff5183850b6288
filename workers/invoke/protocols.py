"""How requests of each invoke protocol are combined into one upstream call and split back.

Pure functions over JSON bodies (no I/O), used by the invoke service:

* `plan(protocol, body)` validates a body and says how it may be batched: its compatibility key
  (requests with equal keys for the same target may share a call) and its row count.
* `merge(protocol, bodies)` builds the one body sent upstream for a batch.
* `split(protocol, response, bodies)` gives each request the response it would have had alone.

Batching rules per protocol:

* v2 (Open Inference Protocol): `inputs` are concatenated along the first dimension when the
  requests agree on input names, datatypes, trailing shape and parameters; every output is split
  along its first dimension, keeping its name, datatype and trailing shape.
* v1 (`:predict`): `instances` (or `inputs`) lists are concatenated; `predictions` are sliced back.
* openai.completions: string prompts become one `prompt` array when every other field matches;
  choices are split by index and re-indexed from 0, `usage` is apportioned by prompt count.
* openai.embeddings: string inputs become one `input` array; `data` is split by index likewise.
* openai.chat: never combined (one conversation per call); calls run concurrently instead.

A single request is always sent with its own body, untouched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.types import InvokeProtocol


class InvalidBody(ValueError):
    """The body cannot be a request of the protocol (reported as `InvalidRequest`)."""


class SplitError(ValueError):
    """A batched response does not line up with its requests (the batch is then sent one by one)."""


@dataclass(frozen=True)
class Plan:
    """How one request takes part in batching: `compat` None means it is always sent alone."""

    compat: Hashable | None
    rows: int = 1


def _key(obj: Any) -> bytes:
    """A canonical, hashable form of JSON data (dict key order does not matter)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _rest(body: dict[str, Any], *skip: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in skip}


# ------------------------------------------------------------------------------------------------ plan


def plan(protocol: InvokeProtocol, body: dict[str, Any]) -> Plan:
    """Validate `body` for `protocol` and say how it may be batched.

    Raises:
        InvalidBody: the body is not a request of that protocol (e.g. v2 without `inputs`).

    Example:
        >>> plan(InvokeProtocol.v1, {"instances": ["a", "b"]}).rows
        2
    """
    if protocol is InvokeProtocol.v2:
        return _plan_v2(body)
    if protocol is InvokeProtocol.v1:
        return _plan_v1(body)
    if body.get("stream"):
        raise InvalidBody("streaming responses cannot travel as one event; send the request without 'stream'")
    if protocol is InvokeProtocol.openai_chat:
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise InvalidBody("a chat request needs 'messages': [{role, content}, ...]")
        return Plan(None)
    field = "prompt" if protocol is InvokeProtocol.openai_completions else "input"
    return _plan_openai_list(body, field, multi_ok=protocol is InvokeProtocol.openai_embeddings)


def _plan_v2(body: dict[str, Any]) -> Plan:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidBody("a v2 request needs 'inputs': [{name, shape, datatype, data}, ...]")
    parts: list[tuple[Any, ...]] = []
    rows: set[int] = set()
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not {"name", "shape", "datatype", "data"} <= tensor.keys():
            raise InvalidBody(f"v2 inputs[{i}] needs name, shape, datatype and data")
        shape, data = tensor["shape"], tensor["data"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidBody(f"v2 inputs[{i}].shape must be a list of non-negative integers")
        if not isinstance(data, list):
            raise InvalidBody(f"v2 inputs[{i}].data must be a list")
        # A scalar shape ([]) with a list of strings is how KServe clients send BYTES: one row per item.
        n = shape[0] if shape else len(data)
        if n == 0 or len(data) % n:
            return Plan(None)
        rows.add(n)
        parts.append((tensor["name"], tensor["datatype"], tuple(shape[1:]),
                      _key(_rest(tensor, "name", "shape", "datatype", "data"))))
    if len(rows) != 1:
        return Plan(None)
    return Plan(("v2", tuple(parts), _key(_rest(body, "inputs", "id"))), rows.pop())


def _plan_v1(body: dict[str, Any]) -> Plan:
    field = "inputs" if "inputs" in body else "instances"
    items = body.get(field)
    if not isinstance(items, list):
        raise InvalidBody("a v1 request needs 'instances': [...] (or 'inputs')")
    if not items:
        return Plan(None)
    return Plan(("v1", field, _key(_rest(body, field))), len(items))


def _plan_openai_list(body: dict[str, Any], field: str, *, multi_ok: bool) -> Plan:
    value = body.get(field)
    if isinstance(value, str):
        rows = 1
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        rows = len(value)
    elif value is None:
        raise InvalidBody(f"an OpenAI request for this protocol needs '{field}'")
    else:
        return Plan(None)  # token-id inputs and other shapes go alone, as sent
    n = body.get("n", 1)
    if not multi_ok and (n not in (1, None) or body.get("best_of") not in (1, None)):
        return Plan(None)
    return Plan(("openai", field, _key(_rest(body, field))), rows)


# ----------------------------------------------------------------------------------------------- merge


def merge(protocol: InvokeProtocol, bodies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The one body for a batch of compatible requests (the single body itself for one request)."""
    if len(bodies) == 1:
        return bodies[0]
    first = bodies[0]
    if protocol is InvokeProtocol.v2:
        inputs = []
        for j, tensor in enumerate(first["inputs"]):
            shape = list(tensor["shape"])
            total = sum(_v2_rows(b["inputs"][j]) for b in bodies)
            data: list[Any] = []
            for b in bodies:
                data.extend(b["inputs"][j]["data"])
            inputs.append({**tensor, "shape": [total, *shape[1:]], "data": data})
        return {**_rest(first, "inputs", "id"), "inputs": inputs}
    if protocol is InvokeProtocol.v1:
        field = "inputs" if "inputs" in first else "instances"
        return {**_rest(first, field), field: [x for b in bodies for x in b[field]]}
    if protocol in (InvokeProtocol.openai_completions, InvokeProtocol.openai_embeddings):
        field = "prompt" if protocol is InvokeProtocol.openai_completions else "input"
        return {**_rest(first, field), field: [x for b in bodies for x in _as_list(b[field])]}
    raise ValueError(f"{protocol} requests are not merged")


def _v2_rows(tensor: dict[str, Any]) -> int:
    shape = tensor["shape"]
    return int(shape[0]) if shape else len(tensor["data"])


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


# ----------------------------------------------------------------------------------------------- split


def rows_of(protocol: InvokeProtocol, body: dict[str, Any]) -> int:
    """Rows a (valid, batchable) body contributes to a batch."""
    return plan(protocol, body).rows


def split(protocol: InvokeProtocol, response: dict[str, Any], bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each request of a batch its own response.

    Raises:
        SplitError: the response does not have one row per request row.
    """
    if len(bodies) == 1:
        return [response]
    rows = [rows_of(protocol, b) for b in bodies]
    if protocol is InvokeProtocol.v2:
        return _split_v2(response, bodies, rows)
    if protocol is InvokeProtocol.v1:
        return _split_v1(response, rows)
    field = "choices" if protocol is InvokeProtocol.openai_completions else "data"
    return _split_openai(response, rows, field)


def _slices(total_items: int, rows: list[int], what: str) -> list[slice]:
    total = sum(rows)
    if total == 0 or total_items % total:
        raise SplitError(f"{what} has {total_items} items for {total} batched rows")
    width = total_items // total
    out, start = [], 0
    for r in rows:
        out.append(slice(start, start + r * width))
        start += r * width
    return out


def _split_tensors(outputs: Any, rows: list[int]) -> list[list[dict[str, Any]]]:
    if not isinstance(outputs, list):
        raise SplitError("response has no 'outputs' list")
    total = sum(rows)
    per_request: list[list[dict[str, Any]]] = [[] for _ in rows]
    for tensor in outputs:
        shape, data = tensor.get("shape"), tensor.get("data")
        if not isinstance(shape, list) or not shape or shape[0] != total or not isinstance(data, list):
            raise SplitError(f"output {tensor.get('name')!r} has shape {shape}, not [{total}, ...]")
        for i, sl in enumerate(_slices(len(data), rows, f"output {tensor.get('name')!r}")):
            per_request[i].append({**tensor, "shape": [rows[i], *shape[1:]], "data": data[sl]})
    return per_request


def _split_v2(response: dict[str, Any], bodies: Sequence[dict[str, Any]], rows: list[int]) -> list[dict[str, Any]]:
    per_request = _split_tensors(response.get("outputs"), rows)
    out = []
    for body, outputs in zip(bodies, per_request, strict=True):
        own = {**response, "outputs": outputs}
        if "id" in body:
            own["id"] = body["id"]
        out.append(own)
    return out


def _split_v1(response: dict[str, Any], rows: list[int]) -> list[dict[str, Any]]:
    predictions = response.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != sum(rows):
        raise SplitError(f"'predictions' does not have {sum(rows)} items")
    extra = _split_tensors(response["outputs"], rows) if "outputs" in response else None
    out = []
    for i, sl in enumerate(_slices(len(predictions), rows, "predictions")):
        own = {**response, "predictions": predictions[sl]}
        if extra is not None:
            own["outputs"] = extra[i]
        out.append(own)
    return out


def _split_openai(response: dict[str, Any], rows: list[int], field: str) -> list[dict[str, Any]]:
    items = response.get(field)
    if not isinstance(items, list) or len(items) != sum(rows):
        raise SplitError(f"{field!r} does not have {sum(rows)} items")
    ordered = sorted(items, key=lambda item: item.get("index", 0))
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else None
    shares = {k: apportion(v, rows) for k, v in (usage or {}).items() if isinstance(v, int)}
    out, start = [], 0
    for i, r in enumerate(rows):
        own_items = [{**copy.copy(item), "index": j} for j, item in enumerate(ordered[start:start + r])]
        own = {**response, field: own_items}
        if usage is not None:
            own["usage"] = {**usage, **{k: v[i] for k, v in shares.items()}}
        out.append(own)
        start += r
    return out


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split an integer count in proportion to `weights`, summing exactly to `total`.

    Largest-remainder method: token usage of a combined call is shared by prompt count.

    Example:
        >>> apportion(10, [1, 1, 1])
        [4, 3, 3]
    """
    weight_sum = sum(weights)
    if weight_sum <= 0:
        return [0 for _ in weights]
    exact = [total * w / weight_sum for w in weights]
    shares = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares
