"""Health and metadata routes, and errors: bad input gets a 4xx with a message, never a 500."""

from __future__ import annotations

import httpx
import pytest

V2_BODY = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}


def test_health_and_metadata_routes(servers, http) -> None:
    url = servers["cls"]
    expected = {
        "/": {"status": "alive"},
        "/v2/health/live": {"live": True},
        "/v2/health/ready": {"ready": True},
        "/v1/models": {"models": ["cls"]},
        "/v2/models": {"models": ["cls"]},
        "/v1/models/cls": {"name": "cls", "ready": True},
        "/v2/models/cls/ready": {"name": "cls", "ready": True},
        "/v2/models/cls": {"name": "cls", "versions": None, "platform": "", "inputs": [], "outputs": []},
    }
    for path, body in expected.items():
        response = http.get(url + path)
        assert (response.status_code, response.json()) == (200, body), path

    models = http.get(f"{url}/openai/v1/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"]) for m in models["data"]] == [("cls", "model")]
    assert isinstance(models["data"][0]["created"], int)
    assert http.get(f"{url}/openai/v1/models/cls").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/models/nope", None),
        ("GET", "/v2/models/nope", None),
        ("GET", "/v2/models/nope/ready", None),
        ("POST", "/v2/models/nope/infer", V2_BODY),
        ("POST", "/v1/models/nope:predict", {"instances": ["hi"]}),
        ("POST", "/openai/v1/completions", {"model": "nope", "prompt": "hi"}),
        ("POST", "/openai/v1/embeddings", {"model": "nope", "input": "hi"}),
    ],
)
def test_unknown_model_is_404_with_kserve_message(servers, http, method, path, body) -> None:
    response = http.request(method, servers["cls"] + path, json=body)
    assert response.status_code == 404
    assert response.json() == {"error": "Model with name nope does not exist."}


def _post(http: httpx.Client, url: str, content: bytes | str) -> httpx.Response:
    return http.post(url, content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("path", "content", "message"),
    [
        ("/v2/models/cls/infer", "{not json", "not valid JSON"),
        ("/v2/models/cls/infer", '{"inputs": []}', "inputs"),
        ("/v2/models/cls/infer", '{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}',
         "BYTES"),
        ("/v2/models/cls/infer", '{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}]}',
         "strings"),
        ("/v1/models/cls:predict", '{"instances": "just a string"}', "instances"),
        ("/v1/models/cls:predict", '{"instances": [{"text": "x"}]}', "strings"),
        ("/v1/models/cls:predict", "[]", "JSON object"),
    ],
)
def test_malformed_v1_v2_bodies_are_400(servers, http, path, content, message) -> None:
    response = _post(http, servers["cls"] + path, content)
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("server", "path", "body", "message"),
    [
        ("gpt", "/v2/models/gpt/infer", V2_BODY, "does not support inference"),
        ("gpt", "/v1/models/gpt:predict", {"instances": ["hi"]}, "does not support inference"),
        ("gpt", "/openai/v1/embeddings", {"model": "gpt", "input": "hi"}, "does not support"),
        ("cls", "/openai/v1/completions", {"model": "cls", "prompt": "hi"}, "does not support Completions API"),
        ("cls", "/openai/v1/chat/completions", {"model": "cls", "messages": [{"role": "user", "content": "x"}]},
         "does not support Completions API"),
        ("cls", "/openai/v1/embeddings", {"model": "cls", "input": "hi"}, "does not support Embeddings API"),
    ],
)
def test_wrong_task_for_the_endpoint_is_400(servers, http, server, path, body, message) -> None:
    response = http.post(servers[server] + path, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in (error["message"] if isinstance(error, dict) else error)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "gpt"}, "prompt"),
        ({"model": "gpt", "prompt": "x", "n": 2}, "'n' > 1 is not supported"),
        ({"model": "gpt", "prompt": "x", "frequency_penalty": 0.5}, "frequency_penalty"),
        ({"model": "gpt", "prompt": "x", "logprobs": 2}, "logprobs"),
        ({"model": "gpt", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "gpt", "prompt": "x", "temperature": -1}, "temperature"),
        ({"model": "gpt", "prompt": "x", "max_tokens": 10_000}, "maximum context length"),
        ({"model": "gpt", "prompt": [10_000_000]}, "token ids"),
        ({"model": "gpt", "prompt": "x", "logit_bias": {"abc": 1}}, "logit_bias"),
    ],
)
def test_invalid_completion_requests_are_400_openai_errors(servers, http, body, message) -> None:
    response = http.post(f"{servers['gpt']}/openai/v1/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


def test_invalid_chat_and_embedding_requests_are_4xx(servers, http) -> None:
    chat = f"{servers['gpt']}/openai/v1/chat/completions"
    assert http.post(chat, json={"model": "gpt", "messages": []}).status_code == 400
    assert http.post(chat, json={"model": "gpt", "messages": [{"role": "user", "content": "x"}], "n": 3}).json() \
        == {"error": {"message": "n != 1 is not supported", "type": "invalid_request_error", "param": None,
                      "code": "400"}}
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]
    assert http.post(chat, json={"model": "gpt", "messages": image}).status_code == 400

    embeddings = f"{servers['embed']}/openai/v1/embeddings"
    assert http.post(embeddings, json={"model": "embed", "input": [[1, 2, 3]]}).status_code == 501
    assert http.post(embeddings, json={"model": "embed", "input": []}).status_code == 400
    assert http.post(embeddings, json={"model": "embed", "input": "x", "dimensions": 8}).status_code == 400


def test_model_versions_are_not_implemented(servers, http) -> None:
    response = http.post(f"{servers['cls']}/v2/models/cls/versions/1/infer", json=V2_BODY)
    assert response.status_code == 501
    assert response.json() == {"error": "Model versioning is not supported."}


def test_no_request_ended_in_a_500(servers, http) -> None:
    for url in servers.values():
        metrics = http.get(f"{url}/metrics").text
        assert 'status="500"' not in metrics
