"""Combining compatible requests into one upstream call and giving each its own answer back."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.types import InvokeProtocol as P
from workers.invoke.protocols import InvalidBody, SplitError, apportion, merge, plan, split


def v2(*texts: str, shape: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": shape if shape is not None else [len(texts)],
                        "datatype": "BYTES", "data": list(texts)}], **extra}


def test_v2_requests_are_concatenated_along_the_first_dimension() -> None:
    bodies = [v2("a", id="req-1"), v2("b", "c"), v2("d", shape=[])]  # [] is how KServe clients send BYTES
    assert len({plan(P.v2, b).compat for b in bodies}) == 1
    assert [plan(P.v2, b).rows for b in bodies] == [1, 2, 1]
    merged = merge(P.v2, bodies)
    assert merged == {"inputs": [{"name": "input-0", "shape": [4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}


def test_v2_outputs_are_split_per_request_keeping_names_datatypes_and_trailing_shapes() -> None:
    bodies = [v2("a", id="req-1"), v2("b", "c")]
    response = {"model_name": "m", "id": "batch", "outputs": [
        {"name": "output-0", "shape": [3], "datatype": "INT64", "data": [1, 0, 1]},
        {"name": "embedding", "shape": [3, 2], "datatype": "FP32", "data": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]},
    ]}
    first, second = split(P.v2, response, bodies)
    assert first == {"model_name": "m", "id": "req-1", "outputs": [
        {"name": "output-0", "shape": [1], "datatype": "INT64", "data": [1]},
        {"name": "embedding", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 1.5]},
    ]}
    assert second["outputs"][0] == {"name": "output-0", "shape": [2], "datatype": "INT64", "data": [0, 1]}
    assert second["outputs"][1] == {"name": "embedding", "shape": [2, 2], "datatype": "FP32",
                                    "data": [2.0, 2.5, 3.0, 3.5]}


def test_v2_requests_that_differ_in_inputs_or_parameters_are_not_combined() -> None:
    base = plan(P.v2, v2("a")).compat
    assert plan(P.v2, v2("a", parameters={"content_type": "pd"})).compat != base
    assert plan(P.v2, {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}).compat != base
    assert plan(P.v2, {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP32",
                                   "data": [1.0, 2.0]}]}).compat != base


def test_a_v2_response_without_a_row_per_request_cannot_be_split() -> None:
    with pytest.raises(SplitError):
        split(P.v2, {"outputs": [{"name": "o", "shape": [1], "datatype": "INT64", "data": [1]}]}, [v2("a"), v2("b")])


def test_v1_instances_are_concatenated_and_predictions_sliced_back() -> None:
    bodies = [{"instances": ["a", "b"]}, {"instances": ["c"]}]
    assert merge(P.v1, bodies) == {"instances": ["a", "b", "c"]}
    assert split(P.v1, {"predictions": [1, 0, 1]}, bodies) == [{"predictions": [1, 0]}, {"predictions": [1]}]


def test_completions_with_equal_parameters_share_a_prompt_array_and_get_their_choices_back() -> None:
    bodies = [{"model": "m", "prompt": "one", "max_tokens": 5}, {"model": "m", "prompt": ["two", "three"],
                                                                 "max_tokens": 5}]
    assert plan(P.openai_completions, bodies[0]).compat == plan(P.openai_completions, bodies[1]).compat
    assert plan(P.openai_completions, {**bodies[0], "max_tokens": 6}).compat != plan(
        P.openai_completions, bodies[0]).compat
    assert merge(P.openai_completions, bodies) == {"model": "m", "max_tokens": 5, "prompt": ["one", "two", "three"]}
    response = {"id": "c", "object": "text_completion", "model": "m",
                "choices": [{"index": 2, "text": "T3"}, {"index": 0, "text": "T1"}, {"index": 1, "text": "T2"}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40}}
    first, second = split(P.openai_completions, response, bodies)
    assert first["choices"] == [{"index": 0, "text": "T1"}]
    assert second["choices"] == [{"index": 0, "text": "T2"}, {"index": 1, "text": "T3"}]
    assert first["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert second["usage"] == {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}


def test_embeddings_share_an_input_array_and_get_their_vectors_back() -> None:
    bodies = [{"model": "e", "input": "a"}, {"model": "e", "input": "b"}]
    assert merge(P.openai_embeddings, bodies) == {"model": "e", "input": ["a", "b"]}
    response = {"object": "embedding", "data": [{"index": 0, "embedding": [0.1]}, {"index": 1, "embedding": [0.2]}],
                "usage": {"prompt_tokens": 5, "total_tokens": 5}}
    first, second = split(P.openai_embeddings, response, bodies)
    assert second["data"] == [{"index": 0, "embedding": [0.2]}]
    assert first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"] == 5


def test_chat_and_token_prompts_and_several_samples_are_always_sent_alone() -> None:
    assert plan(P.openai_chat, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}).compat is None
    assert plan(P.openai_completions, {"model": "m", "prompt": [1, 2, 3]}).compat is None
    assert plan(P.openai_completions, {"model": "m", "prompt": "x", "n": 2}).compat is None


@pytest.mark.parametrize(("protocol", "body", "words"), [
    (P.v2, {"instances": ["a"]}, "inputs"),
    (P.v1, {"inputs": "not a list"}, "instances"),
    (P.openai_chat, {"model": "m", "messages": [], "stream": False}, "messages"),
    (P.openai_completions, {"model": "m", "prompt": "x", "stream": True}, "stream"),
    (P.openai_embeddings, {"model": "m"}, "input"),
])
def test_a_body_that_does_not_fit_its_protocol_is_refused_with_what_is_missing(
    protocol: P, body: dict[str, Any], words: str,
) -> None:
    with pytest.raises(InvalidBody, match=words):
        plan(protocol, body)


def test_usage_is_apportioned_exactly() -> None:
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(apportion(7, [3, 1, 2])) == 7
