"""Model URIs and names are validated where they enter the system, with errors a person can act on."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from schemas import DeployRequested, ModelURI, URIScheme


@pytest.mark.parametrize(
    ("text", "scheme", "authority", "path", "revision"),
    [
        ("huggingface://distilbert/distilbert-base-uncased-finetuned-sst-2-english", URIScheme.huggingface, "",
         "distilbert/distilbert-base-uncased-finetuned-sst-2-english", None),
        ("huggingface://meta-llama/meta-llama-3-8b-instruct", URIScheme.huggingface, "",
         "meta-llama/meta-llama-3-8b-instruct", None),
        ("hf://Qwen/Qwen2-0.5B-Instruct:a4d0a85", URIScheme.hf, "", "Qwen/Qwen2-0.5B-Instruct", "a4d0a85"),
        ("s3://datalake/llm/model/test_llm_model/9b2f63c0-5a5e-4a53-8e29-0e0f6b1e6c57/", URIScheme.s3, "datalake",
         "llm/model/test_llm_model/9b2f63c0-5a5e-4a53-8e29-0e0f6b1e6c57/", None),
        ("file:///srv/models/minilm", URIScheme.file, "", "/srv/models/minilm", None),
        ("store://nlp/model/sentiment:3f2a", URIScheme.store, "nlp", "sentiment", "3f2a"),
        ("store://nlp/model/huggingface/sentiment", URIScheme.store, "nlp", "sentiment", None),
        ("store://nlp/model/sentiment:latest", URIScheme.store, "nlp", "sentiment", None),
        ("pvc://models-claim/llama", URIScheme.pvc, "models-claim", "llama", None),
    ],
)
def test_accepted_uris_parse_into_their_parts(text, scheme, authority, path, revision):
    uri = ModelURI.parse(text)
    assert (uri.scheme, uri.authority, uri.path, uri.revision) == (scheme, authority, path, revision)


@pytest.mark.parametrize(
    "text",
    [
        "huggingface://distilbert/distilbert-base-uncased-finetuned-sst-2-english",
        "s3://datalake/llm/model/test_llm_model/9b2f63c0/",
        "file:///srv/models/minilm",
        "store://nlp/model/sentiment:3f2a",
        "hf://org/name:main",
    ],
)
def test_uris_print_back_as_they_were_written(text):
    assert str(ModelURI.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("gs://bucket/model", "scheme 'gs' is not allowed"),
        ("http://example.com/model", "scheme 'http' is not allowed"),
        ("file://relative/path", "absolute path"),
        ("file:///srv/../etc/passwd", "'..' is not allowed"),
        ("s3://x/key", "valid bucket name"),
        ("s3://bucket/a/../b", "'..' is not allowed"),
        ("store://nlp/dataset/sentiment", "store://project/model/name"),
        ("huggingface://org/na me", "huggingface://org/name"),
        ("distilbert/distilbert-base-uncased", "not a model URI"),
    ],
)
def test_rejected_uris_say_what_is_expected(text, hint):
    with pytest.raises(ValueError, match=re.escape(hint)):
        ModelURI.parse(text)


@pytest.mark.parametrize("name", ["Sentiment", "my_service", "-svc", "svc-", "a" * 46, "", "svc.name"])
def test_service_names_must_be_dns_labels_short_enough_for_kserve(name):
    with pytest.raises(ValidationError) as info:
        DeployRequested(service=name, path="hf://org/model")
    assert "service" in str(info.value)


@pytest.mark.parametrize("name", ["sentiment", "llama3-8b", "a" * 45, "x"])
def test_valid_service_names_pass(name):
    assert DeployRequested(service=name, path="hf://org/model").service == name


@pytest.mark.parametrize("env", ["HF_TOKEN", "OPENAI_API_KEY", "DB_PASSWORD", "aws_secret_access_key", "AUTH_HEADER"])
def test_secret_looking_plain_envs_are_refused_with_the_way_out(env):
    with pytest.raises(ValidationError) as info:
        DeployRequested(service="svc", path="hf://org/m", envs=[{"name": env, "value": "hf_abc"}])
    assert "secret reference" in str(info.value)


def test_secret_looking_envs_pass_when_settings_allow_them():
    data = DeployRequested.model_validate(
        {"service": "svc", "path": "hf://org/m", "envs": [{"name": "HF_TOKEN", "value": "x"}]},
        context={"allow_plain_secret_envs": True},
    )
    assert data.envs[0].name == "HF_TOKEN"


def test_ordinary_envs_and_secret_references_are_accepted():
    data = DeployRequested(
        service="llm",
        path="huggingface://meta-llama/meta-llama-3-8b-instruct",
        envs=[{"name": "TRANSFORMERS_VERBOSITY", "value": "info"}],
        secret_refs=[{"env": "HF_TOKEN", "secret": "hf-token", "key": "token"}],
        profile="1xa100",
    )
    assert data.secret_refs[0].env == "HF_TOKEN"
    assert data.profile == "1xa100"


def test_probabilities_and_raw_logits_are_mutually_exclusive():
    with pytest.raises(ValidationError, match="mutually exclusive"):
        DeployRequested(
            service="svc", path="hf://org/m", runtime={"return_probabilities": True, "return_raw_logits": True}
        )
