"""Encoder tasks over v1, v2 and OpenAI embeddings: the shapes, datatypes and values KServe clients expect."""

from __future__ import annotations

import ast
import asyncio
import base64
import math
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest

SEED_REQUEST = {
    "inputs": [{"name": "input-0", "shape": [2], "datatype": "BYTES",
                "data": ["Hello, my dog is cute", "I am feeling sad"]}]
}
# KServe's e2e expectation for all-MiniLM-L6-v2 and "This is an example sentence." (first values).
KSERVE_EMBEDDING_HEAD = [0.09812460094690323, 0.06781268864870071, 0.06252312660217285]


def v2(texts: list[str], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": [len(texts)], "datatype": "BYTES", "data": texts}], **extra}


@pytest.fixture(scope="module")
def reference(model_dirs: dict[str, Path]) -> dict[str, Any]:
    """The same models run in-process with plain transformers, to check the served values."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dirs["classifier"]))
    classifier = AutoModelForSequenceClassification.from_pretrained(str(model_dirs["classifier"])).eval()
    fill_mask = AutoModelForMaskedLM.from_pretrained(str(model_dirs["fill_mask"])).eval()
    texts = SEED_REQUEST["inputs"][0]["data"]
    with torch.inference_mode():
        logits = classifier(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        masked_text = "The capital of France is [MASK]."
        encoded = tokenizer([masked_text], return_tensors="pt")
        position = encoded["input_ids"][0].tolist().index(tokenizer.mask_token_id)
        predicted = fill_mask(**encoded).logits[0, position].argmax().item()
    return {
        "tokenizer": tokenizer,
        "logits": logits.tolist(),
        "classes": logits.argmax(dim=-1).tolist(),
        "fill_mask_text": masked_text,
        "fill_mask_token": tokenizer.decode([predicted]),
    }


def test_seed_v2_classification_request_returns_int64_classes(servers, http, reference) -> None:
    # Given the exact request of the seed workflow
    response = http.post(f"{servers['cls']}/v2/models/cls/infer", json=SEED_REQUEST)

    # Then one INT64 output of shape [2] holds the argmax classes, in the KServe envelope
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "cls"
    assert body["model_version"] is None
    assert body["parameters"] is None
    assert isinstance(body["id"], str)
    assert body["id"]
    assert body["outputs"] == [
        {"name": "output-0", "shape": [2], "datatype": "INT64", "parameters": None, "data": reference["classes"]}
    ]


def test_v2_request_id_is_echoed(servers, http) -> None:
    response = http.post(f"{servers['cls']}/v2/models/cls/infer", json=v2(["hi"], id="req-42"))
    assert response.json()["id"] == "req-42"


def test_v1_predict_returns_predictions_and_inputs_take_precedence(servers, http, reference) -> None:
    url = f"{servers['cls']}/v1/models/cls:predict"
    texts = SEED_REQUEST["inputs"][0]["data"]
    assert http.post(url, json={"instances": texts}).json() == {"predictions": reference["classes"]}
    both = http.post(url, json={"instances": ["x", "y", "z"], "inputs": texts}).json()
    assert both == {"predictions": reference["classes"]}


def test_probabilities_are_python_dict_strings_rounded_to_four_decimals(servers, http, reference) -> None:
    body = http.post(f"{servers['cls-probs']}/v2/models/cls-probs/infer", json=SEED_REQUEST).json()
    output = body["outputs"][0]
    assert (output["name"], output["datatype"], output["shape"]) == ("output-0", "BYTES", [2])
    for rendered, logits in zip(output["data"], reference["logits"], strict=True):
        probabilities = ast.literal_eval(rendered)  # Python repr, not JSON: "{0: 0.3312, ...}"
        assert list(probabilities) == [0, 1, 2]
        expected = [math.exp(x) / sum(math.exp(y) for y in logits) for x in logits]
        assert list(probabilities.values()) == [float(f"{p:.4f}") for p in expected]

    # v1 renders the integer keys as JSON strings
    v1 = http.post(f"{servers['cls-probs']}/v1/models/cls-probs:predict", json={"instances": ["hi"]}).json()
    assert set(v1["predictions"][0]) == {"0", "1", "2"}


def test_raw_logits_match_the_model(servers, http, reference) -> None:
    body = http.post(f"{servers['cls-logits']}/v2/models/cls-logits/infer", json=SEED_REQUEST).json()
    rows = [ast.literal_eval(text) for text in body["outputs"][0]["data"]]
    for row, logits in zip(rows, reference["logits"], strict=True):
        assert list(row.values()) == pytest.approx(logits, abs=1e-5)


def test_token_classification_shape_is_n_by_1_by_longest_text(servers, http, reference) -> None:
    texts = ["HuggingFace is a company based in Paris and New York", "hello"]
    lengths = [len(reference["tokenizer"](t)["input_ids"]) for t in texts]

    v2_body = http.post(f"{servers['ner']}/v2/models/ner/infer", json=v2(texts)).json()
    output = v2_body["outputs"][0]
    assert output["datatype"] == "INT64"
    assert output["shape"] == [2, 1, max(lengths)]
    assert len(output["data"]) == 2 * max(lengths)
    assert all(0 <= label < 5 for label in output["data"])

    v1_body = http.post(f"{servers['ner']}/v1/models/ner:predict", json={"instances": texts}).json()
    assert [len(p) for p in v1_body["predictions"]] == [1, 1]
    assert [len(p[0]) for p in v1_body["predictions"]] == [max(lengths)] * 2
    assert [p[0] for p in v1_body["predictions"]] == [output["data"][: max(lengths)], output["data"][max(lengths):]]


def test_token_classification_responses_do_not_depend_on_batch_neighbours(servers, http) -> None:
    # Given a short text answered on its own
    url = f"{servers['ner']}/v2/models/ner/infer"
    alone = http.post(url, json=v2(["hello"])).json()["outputs"][0]

    # When it is sent together with a much longer request (the server batches them)
    async def together() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(
                client.post(url, json=v2(["hello"])),
                client.post(url, json=v2(["a much longer sentence that pads the whole batch " * 3])),
            )
        return [r.json()["outputs"][0] for r in responses]

    short, _ = asyncio.run(together())

    # Then its shape and labels are the same
    assert short == alone


def test_fill_mask_returns_the_token_at_the_mask(servers, http, reference) -> None:
    text = reference["fill_mask_text"]
    v1 = http.post(f"{servers['fill']}/v1/models/fill:predict", json={"instances": [text, "no mask here"]}).json()
    assert v1 == {"predictions": [reference["fill_mask_token"], ""]}
    v2_output = http.post(f"{servers['fill']}/v2/models/fill/infer", json=v2([text])).json()["outputs"][0]
    assert v2_output == {"name": "output-0", "shape": [1], "datatype": "BYTES", "parameters": None,
                         "data": [reference["fill_mask_token"]]}


def test_text_embedding_v2_is_fp64_and_matches_kserve(servers, http) -> None:
    body = http.post(f"{servers['embed']}/v2/models/embed/infer",
                     json=v2(["This is an example sentence.", "Another one"])).json()
    output = body["outputs"][0]
    assert (output["datatype"], output["shape"]) == ("FP64", [2, 384])
    first = output["data"][:384]
    assert first[:3] == pytest.approx(KSERVE_EMBEDDING_HEAD, abs=1e-6)
    assert math.fsum(x * x for x in first) == pytest.approx(1.0, abs=1e-5)  # L2-normalised


def test_openai_embeddings_float_and_base64(servers, http) -> None:
    url = f"{servers['embed']}/openai/v1/embeddings"
    body = http.post(url, json={"model": "embed", "input": "This is an example sentence.",
                                "encoding_format": "float"}).json()
    assert body["object"] == "embedding"
    assert body["model"] == "embed"
    assert body["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    assert [d["index"] for d in body["data"]] == [0]
    assert body["data"][0]["object"] == "embedding"
    vector = body["data"][0]["embedding"]
    assert vector[:3] == pytest.approx(KSERVE_EMBEDDING_HEAD, abs=1e-6)

    packed = http.post(url, json={"model": "embed", "input": ["This is an example sentence."],
                                  "encoding_format": "base64"}).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert list(decoded) == pytest.approx(vector, abs=1e-7)


def test_official_openai_client_embeddings(servers) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{servers['embed']}/openai/v1", api_key="unused")
    result = client.embeddings.create(model="embed", input=["I'm happy", "I'm full of happiness", "The park."])
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    cosine = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
    assert cosine[0] > cosine[1]  # the paraphrase is closer than the unrelated sentence
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0


def test_concurrent_requests_are_batched(servers, http) -> None:
    # When 16 clients send one text each at the same time
    url = f"{servers['cls']}/v2/models/cls/infer"

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(*(client.post(url, json=v2([f"text number {i}"])) for i in range(16)))
        return [r.status_code for r in responses]

    assert asyncio.run(burst()) == [200] * 16

    # Then the server ran them in batches larger than one
    metrics = http.get(f"{servers['cls']}/metrics").text
    batches = _histogram(metrics, "modelbus_serving_batch_size")
    assert batches["sum"] / batches["count"] > 1
    assert batches["buckets"]["1.0"] < batches["count"]  # some batch held more than one row
    assert 'modelbus_serving_requests_total{endpoint="/v2/models/{name}/infer",status="200"}' in metrics
    assert "modelbus_serving_queue_depth" in metrics


def _histogram(metrics: str, name: str) -> dict[str, Any]:
    buckets: dict[str, float] = {}
    result: dict[str, Any] = {"buckets": buckets}
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_sum"):
            result["sum"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count"):
            result["count"] = float(line.rsplit(" ", 1)[1])
    return result
