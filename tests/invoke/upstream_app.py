"""A small, real HTTP model server for invoke tests: KServe-shaped routes with scripted behaviour.

It answers like a classifier / generator would (deterministic answers derived from the input, so
tests can check each request got its own answer) and misbehaves on purpose by model name:
`fail500` always answers 500, `slow` answers after 2 s, `flaky` fails twice with 503 then works.
It runs in uvicorn on a free port in a thread, and records the size of every call it receives.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def label(text: str) -> int:
    """The "class" the test server gives a text: 1 for an even length, 0 otherwise."""
    return int(len(text) % 2 == 0)


@dataclass
class Calls:
    """What the server saw: one entry per HTTP call, (path, rows in that call)."""

    log: list[tuple[str, int]] = field(default_factory=list)
    by_model: dict[str, int] = field(default_factory=dict)

    def count(self, model: str) -> int:
        return self.by_model.get(model, 0)


async def _misbehave(model: str, calls: Calls) -> JSONResponse | None:
    n = calls.by_model[model] = calls.by_model.get(model, 0) + 1
    if model == "fail500":
        return JSONResponse({"error": "model crashed"}, status_code=500)
    if model == "slow":
        await asyncio.sleep(2.0)
    if model == "flaky" and n <= 2:
        return JSONResponse({"error": "warming up"}, status_code=503)
    return None


def build_app(calls: Calls) -> Starlette:
    async def v2_infer(request: Request) -> JSONResponse:
        model = request.path_params["name"]
        body = await request.json()
        if (bad := await _misbehave(model, calls)) is not None:
            return bad
        texts = body["inputs"][0]["data"]
        if any(t == "poison" for t in texts):
            return JSONResponse({"error": "input 'poison' is not acceptable"}, status_code=400)
        calls.log.append(("v2", len(texts)))
        return JSONResponse({
            "model_name": model, "model_version": None, "id": body.get("id", "generated"), "parameters": None,
            "outputs": [
                {"name": "output-0", "shape": [len(texts)], "datatype": "INT64", "parameters": None,
                 "data": [label(t) for t in texts]},
                {"name": "lengths", "shape": [len(texts), 2], "datatype": "FP64", "parameters": None,
                 "data": [x for t in texts for x in (float(len(t)), float(len(t.split())))]},
            ],
        })

    async def v1_predict(request: Request) -> JSONResponse:
        model = request.path_params["name"].removesuffix(":predict")
        body = await request.json()
        if (bad := await _misbehave(model, calls)) is not None:
            return bad
        texts = body.get("inputs", body.get("instances"))
        calls.log.append(("v1", len(texts)))
        return JSONResponse({"predictions": [label(t) for t in texts]})

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        if (bad := await _misbehave(body.get("model", ""), calls)) is not None:
            return bad
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        calls.log.append(("completions", len(prompts)))
        return JSONResponse({
            "id": "cmpl-1", "object": "text_completion", "created": 1, "model": body["model"],
            "choices": [{"index": i, "text": f" after {p}", "finish_reason": "length", "logprobs": None}
                        for i, p in reversed(list(enumerate(prompts)))],
            "usage": {"prompt_tokens": 10 * len(prompts), "completion_tokens": 4 * len(prompts),
                      "total_tokens": 14 * len(prompts)},
        })

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        if (bad := await _misbehave(body.get("model", ""), calls)) is not None:
            return bad
        calls.log.append(("chat", 1))
        last = body["messages"][-1]["content"]
        return JSONResponse({
            "id": "chat-1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"you said: {last}"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        })

    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        calls.log.append(("embeddings", len(inputs)))
        return JSONResponse({
            "id": "emb-1", "object": "embedding", "created": 1, "model": body["model"],
            "data": [{"index": i, "object": "embedding", "embedding": [float(len(t)), 1.0]}
                     for i, t in enumerate(inputs)],
            "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
        })

    return Starlette(routes=[
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v1/models/{name}", v1_predict, methods=["POST"]),
        Route("/openai/v1/completions", completions, methods=["POST"]),
        Route("/openai/v1/chat/completions", chat, methods=["POST"]),
        Route("/openai/v1/embeddings", embeddings, methods=["POST"]),
    ])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_upstream() -> Iterator[tuple[str, Calls]]:
    """Start the server on a free port; yield (base URL, calls); stop it on exit."""
    calls = Calls()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(calls), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="test-upstream", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test upstream did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", calls
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def ready_event_data(service: str, base_url: str, *, model_name: str = "model", task: str = "sequence_classification",
                     ) -> dict[str, Any]:
    """ServiceReady data for a server at `base_url`, as the deploy worker announces it."""
    generative = task in ("text_generation", "text2text_generation")
    endpoints: dict[str, str] = (
        {"openai_base": f"{base_url}/openai/v1", "openai_completions": f"{base_url}/openai/v1/completions",
         "openai_chat": f"{base_url}/openai/v1/chat/completions"}
        if generative else
        {"v2_infer": f"{base_url}/v2/models/{model_name}/infer",
         "v1_predict": f"{base_url}/v1/models/{model_name}:predict",
         "openai_embeddings": f"{base_url}/openai/v1/embeddings"}
    )
    return {"service": service, "model_name": model_name, "backend": "local", "path": "file:///models/x",
            "task": task, "url": base_url, "endpoints": endpoints}
