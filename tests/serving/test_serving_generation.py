"""Completions and chat over the OpenAI protocol: schema, usage, stop, streaming, batching, the official client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

COMPLETION_FIELDS = {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}


@pytest.fixture(scope="module")
def tokenizers(model_dirs: dict[str, Path]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(str(model_dirs[name])) for name in ("generator", "seq2seq")}


def complete(http: httpx.Client, url: str, **body: Any) -> dict[str, Any]:
    response = http.post(f"{url}/openai/v1/completions", json={"model": "gpt", **body})
    assert response.status_code == 200, response.text
    return response.json()


def sse_events(response: httpx.Response) -> list[Any]:
    """Parse a text/event-stream body the way KServe's e2e helpers do; checks the framing on the way."""
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.text
    assert raw.endswith("data: [DONE]\n\n")
    events = [block for block in raw.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    return [orjson.loads(block[6:]) for block in events[:-1]]


def test_completion_has_the_openai_fields_and_exact_usage(servers, http, tokenizers) -> None:
    prompt = "Hello, my dog is cute"
    body = complete(http, servers["gpt"], prompt=prompt, max_tokens=7)

    assert set(body) == COMPLETION_FIELDS
    assert body["object"] == "text_completion"
    assert body["model"] == "gpt"
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["logprobs"] is None
    assert isinstance(choice["text"], str)
    prompt_tokens = len(tokenizers["generator"](prompt)["input_ids"])
    usage = body["usage"]
    assert usage["prompt_tokens"] == prompt_tokens
    assert usage["total_tokens"] == prompt_tokens + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 7
    else:
        assert choice["finish_reason"] == "stop"
        assert usage["completion_tokens"] <= 7


def test_greedy_completion_is_deterministic_and_max_tokens_bounds_it(servers, http) -> None:
    first = complete(http, servers["gpt"], prompt="The quick brown fox", max_tokens=12)
    again = complete(http, servers["gpt"], prompt="The quick brown fox", max_tokens=12)
    assert first["choices"][0]["text"] == again["choices"][0]["text"]
    short = complete(http, servers["gpt"], prompt="The quick brown fox", max_tokens=3)
    assert short["usage"]["completion_tokens"] <= 3
    assert first["choices"][0]["text"].startswith(short["choices"][0]["text"])


def test_stop_sequence_cuts_the_text_before_it(servers, http) -> None:
    # Given the greedy continuation of a prompt
    full = complete(http, servers["gpt"], prompt="modelbus serves", max_tokens=24)["choices"][0]["text"]
    assert len(full) > 6, full
    stop = full[3:6]
    expected = full[: full.index(stop)]

    # When the same request names a piece of it as stop sequence
    body = complete(http, servers["gpt"], prompt="modelbus serves", max_tokens=24, stop=[stop, "never-seen"])

    # Then the text ends right before its first occurrence
    assert body["choices"][0]["text"] == expected
    assert body["choices"][0]["finish_reason"] == "stop"


def test_seed_makes_sampling_reproducible(servers, http) -> None:
    request = {"prompt": "I am feeling", "max_tokens": 10, "temperature": 1.5, "top_p": 0.95, "seed": 1234}
    first = complete(http, servers["gpt"], **request)["choices"][0]["text"]
    assert complete(http, servers["gpt"], **request)["choices"][0]["text"] == first


def test_prompt_list_gives_one_choice_per_prompt_equal_to_single_requests(servers, http) -> None:
    prompts = ["Hello, my dog is cute", "1+1=2", "The capital of France is"]
    batch = complete(http, servers["gpt"], prompt=prompts, max_tokens=6)
    assert [c["index"] for c in batch["choices"]] == [0, 1, 2]
    singles = [complete(http, servers["gpt"], prompt=p, max_tokens=6) for p in prompts]
    assert [c["text"] for c in batch["choices"]] == [s["choices"][0]["text"] for s in singles]
    assert batch["usage"]["prompt_tokens"] == sum(s["usage"]["prompt_tokens"] for s in singles)


def test_echo_prepends_the_prompt(servers, http) -> None:
    body = complete(http, servers["gpt"], prompt="Hello, my dog", max_tokens=4, echo=True)
    plain = complete(http, servers["gpt"], prompt="Hello, my dog", max_tokens=4)
    assert body["choices"][0]["text"] == "Hello, my dog" + plain["choices"][0]["text"]


def test_streamed_completion_joins_to_the_same_text(servers, http) -> None:
    request = {"model": "gpt", "prompt": "The quick brown fox", "max_tokens": 10}
    expected = complete(http, servers["gpt"], **{k: v for k, v in request.items() if k != "model"})

    response = http.post(f"{servers['gpt']}/openai/v1/completions",
                         json={**request, "stream": True, "stream_options": {"include_usage": True}})
    events = sse_events(response)

    *chunks, usage_chunk = events
    assert len(chunks) >= 2
    assert {c["id"] for c in events} == {events[0]["id"]}
    assert all(c["object"] == "text_completion" and c["model"] == "gpt" for c in events)
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == expected["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == expected["usage"]


def test_chat_completion_applies_the_chat_template(servers, http, tokenizers) -> None:
    messages = [{"role": "system", "content": "Answer with just the number, nothing else."},
                {"role": "user", "content": "2+2="}]
    response = http.post(f"{servers['gpt']}/openai/v1/chat/completions",
                         json={"model": "gpt", "messages": messages, "temperature": 0, "max_tokens": 8})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == COMPLETION_FIELDS
    assert body["object"] == "chat.completion"
    [choice] = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in {"stop", "length"}
    tokenizer = tokenizers["generator"]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert body["usage"]["prompt_tokens"] == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])

    stream = http.post(f"{servers['gpt']}/openai/v1/chat/completions",
                       json={"model": "gpt", "messages": messages, "max_tokens": 8, "stream": True})
    chunks = sse_events(stream)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in chunks)
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == choice["message"]["content"]


def test_text2text_completion_and_chat_without_template(servers, http, tokenizers) -> None:
    url = servers["t5"]
    body = http.post(f"{url}/openai/v1/completions",
                     json={"model": "t5", "prompt": "translate this to germany", "temperature": 0,
                           "max_tokens": 6}).json()
    assert body["object"] == "text_completion"
    assert body["usage"]["prompt_tokens"] == len(tokenizers["seq2seq"]("translate this to germany")["input_ids"])
    assert body["usage"]["completion_tokens"] <= 6

    # The T5 tokenizer has no chat template: the documented fallback renders "role: content" lines
    chat = http.post(f"{url}/openai/v1/chat/completions",
                     json={"model": "t5", "messages": [{"role": "user", "content": "hello there"}],
                           "max_tokens": 4}).json()
    fallback = "user: hello there\nassistant:"
    assert chat["usage"]["prompt_tokens"] == len(tokenizers["seq2seq"](fallback)["input_ids"])
    assert chat["choices"][0]["message"]["role"] == "assistant"

    echo = http.post(f"{url}/openai/v1/completions", json={"model": "t5", "prompt": "x", "echo": True})
    assert echo.status_code == 400


def test_concurrent_generation_requests_are_batched_without_changing_results(servers, http) -> None:
    prompts = [f"request {i} says hello" for i in range(6)]
    sequential = [complete(http, servers["gpt"], prompt=p, max_tokens=5)["choices"][0]["text"] for p in prompts]
    before = _batch_count(http.get(f"{servers['gpt']}/metrics").text)

    async def burst() -> list[str]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(*(
                client.post(f"{servers['gpt']}/openai/v1/completions",
                            json={"model": "gpt", "prompt": p, "max_tokens": 5}) for p in prompts))
        return [r.json()["choices"][0]["text"] for r in responses]

    assert asyncio.run(burst()) == sequential
    after = _batch_count(http.get(f"{servers['gpt']}/metrics").text)
    assert after - before < len(prompts)  # fewer generate() calls than requests


def _batch_count(metrics: str) -> float:
    line = next(x for x in metrics.splitlines() if x.startswith("modelbus_serving_batch_size_count"))
    return float(line.rsplit(" ", 1)[1])


def test_official_openai_client_against_openai_v1(servers) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{servers['gpt']}/openai/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["gpt"]

    completion = client.completions.create(model="gpt", prompt="Hello, my dog", max_tokens=5, temperature=0)
    assert completion.object == "text_completion"
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 5

    chat = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "2+2="}],
                                          max_tokens=5, temperature=0)
    assert chat.choices[0].message.role == "assistant"

    streamed = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "2+2="}],
                                              max_tokens=5, temperature=0, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == chat.choices[0].message.content

    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="gpt", prompt="x", max_tokens=100_000)
