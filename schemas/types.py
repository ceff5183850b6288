"""Typed building blocks of the event contract: names, model URIs, enums, env and secret references.

Everything here is pure data validated by pydantic; nothing talks to a broker, a cluster or the network.
Names are checked where they will become Kubernetes object names (DNS-1123), so a bad name fails when
the event is decoded, not minutes later inside the cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

#: A DNS-1123 label: what Kubernetes accepts as a Service, Job or Secret name.
DNSLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]

#: A service name. KServe derives `<name>-predictor-00001` style objects from it, which must stay
#: within 63 characters, hence the tighter bound.
ServiceName = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=45)]

#: The name a model server registers its model under (`--model_name`); it appears in URL paths.
ModelName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", min_length=1, max_length=128)
]

#: A name for an environment variable.
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


class Task(StrEnum):
    """The tasks the Hugging Face runtime serves (its `--task` values)."""

    text_generation = "text_generation"
    text2text_generation = "text2text_generation"
    fill_mask = "fill_mask"
    sequence_classification = "sequence_classification"
    token_classification = "token_classification"
    text_embedding = "text_embedding"

    @property
    def generative(self) -> bool:
        """Generative tasks are served over the OpenAI API only, never v1/v2."""
        return self in (Task.text_generation, Task.text2text_generation)


class ServingBackend(StrEnum):
    """The runtime's `--backend`: which inference engine runs the model."""

    auto = "auto"
    huggingface = "huggingface"
    vllm = "vllm"


class Dtype(StrEnum):
    """The runtime's `--dtype` values."""

    auto = "auto"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float = "float"
    half = "half"


class InvokeProtocol(StrEnum):
    """How an invoke request talks to a model server."""

    v2 = "v2"
    v1 = "v1"
    openai_completions = "openai.completions"
    openai_chat = "openai.chat"
    openai_embeddings = "openai.embeddings"

    @property
    def generative(self) -> bool:
        return self in (InvokeProtocol.openai_completions, InvokeProtocol.openai_chat)


class URIScheme(StrEnum):
    huggingface = "huggingface"
    hf = "hf"
    s3 = "s3"
    file = "file"
    store = "store"
    pvc = "pvc"


_HF_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?"
_HF_RE = re.compile(rf"^(?P<repo>{_HF_ID})(:(?P<rev>[A-Za-z0-9_.\-/]+))?$")
_S3_RE = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/(?P<key>.*))?$")
_STORE_RE = re.compile(
    r"^(?P<project>[a-z0-9][-a-z0-9]*)/model/(?:huggingface/)?(?P<name>[a-z0-9][-a-z0-9]*)"
    r"(:(?P<version>[A-Za-z0-9][A-Za-z0-9_.-]*))?$"
)
_PVC_RE = re.compile(rf"^(?P<claim>{DNS_LABEL_PATTERN[1:-1]})(/(?P<path>.*))?$")
URI_PATTERN = r"^(huggingface|hf|s3|file|store|pvc)://.+$"


@dataclass(frozen=True, slots=True)
class ModelURI:
    """A parsed model location.

    Accepted forms:
        huggingface://org/name[:revision]   a Hub repository, downloaded by the server
        hf://org/name[:revision]            the same
        s3://bucket/key/                    a folder in an S3-compatible store
        file:///absolute/path               a folder on the worker's (or server's) disk
        store://project/model/name[:ver]    a version recorded in modelbus's model registry
        pvc://claim/path                    a folder on a Kubernetes PersistentVolumeClaim

    Example:
        >>> ModelURI.parse("huggingface://meta-llama/meta-llama-3-8b-instruct").repo
        'meta-llama/meta-llama-3-8b-instruct'
    """

    scheme: URIScheme
    #: bucket (s3), project (store), claim (pvc), "" otherwise
    authority: str
    #: repo id (hf), key (s3), absolute path (file), model name (store), path (pvc)
    path: str
    #: revision (hf) or version (store); None means the latest
    revision: str | None = None

    @property
    def repo(self) -> str:
        """The Hub repository id of a `huggingface://` or `hf://` URI."""
        return self.path

    @property
    def is_hub(self) -> bool:
        return self.scheme in (URIScheme.huggingface, URIScheme.hf)

    @classmethod
    def parse(cls, value: str) -> ModelURI:
        """Parse and validate a URI string; raises ValueError with the accepted forms on failure."""
        if not isinstance(value, str):
            raise TypeError("a model URI must be a string")
        if len(value) > 2048:
            raise ValueError("model URI longer than 2048 characters")
        scheme_text, sep, rest = value.partition("://")
        if not sep or not rest:
            raise ValueError(f"{value!r} is not a model URI; expected one of {_FORMS}")
        try:
            scheme = URIScheme(scheme_text)
        except ValueError:
            raise ValueError(f"URI scheme {scheme_text!r} is not allowed; expected one of {_FORMS}") from None
        return _PARSERS[scheme](value, rest)

    def __str__(self) -> str:
        if self.scheme in (URIScheme.huggingface, URIScheme.hf):
            return f"{self.scheme}://{self.path}" + (f":{self.revision}" if self.revision else "")
        if self.scheme == URIScheme.file:
            return f"file://{self.path}"
        if self.scheme == URIScheme.store:
            suffix = f":{self.revision}" if self.revision else ""
            return f"store://{self.authority}/model/{self.path}{suffix}"
        return f"{self.scheme}://{self.authority}" + (f"/{self.path}" if self.path else "")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def coerce(value: Any) -> ModelURI:
            return value if isinstance(value, cls) else cls.parse(value)

        return core_schema.no_info_plain_validator_function(
            coerce, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": URI_PATTERN, "format": "uri", "description": cls.__doc__ or ""}


_FORMS = "huggingface://org/name[:rev], hf://org/name[:rev], s3://bucket/key/, file:///abs/path, " \
    "store://project/model/name[:version], pvc://claim/path"


def _parse_hub(value: str, rest: str) -> ModelURI:
    match = _HF_RE.match(rest)
    if not match:
        raise ValueError(f"{value!r}: expected huggingface://org/name[:revision]")
    scheme = URIScheme(value.split("://", 1)[0])
    return ModelURI(scheme, "", match["repo"], match["rev"])


def _parse_s3(value: str, rest: str) -> ModelURI:
    match = _S3_RE.match(rest)
    if not match:
        raise ValueError(f"{value!r}: expected s3://bucket/key/ with a valid bucket name")
    key = match["key"] or ""
    if ".." in key.split("/"):
        raise ValueError(f"{value!r}: '..' is not allowed in an S3 key")
    return ModelURI(URIScheme.s3, match["bucket"], key)


def _parse_file(value: str, rest: str) -> ModelURI:
    if not rest.startswith("/"):
        raise ValueError(f"{value!r}: a file URI needs an absolute path (file:///abs/path)")
    if ".." in rest.split("/"):
        raise ValueError(f"{value!r}: '..' is not allowed in a file path")
    return ModelURI(URIScheme.file, "", rest)


def _parse_store(value: str, rest: str) -> ModelURI:
    match = _STORE_RE.match(rest)
    if not match:
        raise ValueError(f"{value!r}: expected store://project/model/name[:version|latest]")
    version = match["version"]
    return ModelURI(URIScheme.store, match["project"], match["name"], None if version == "latest" else version)


def _parse_pvc(value: str, rest: str) -> ModelURI:
    match = _PVC_RE.match(rest)
    if not match:
        raise ValueError(f"{value!r}: expected pvc://claim-name/path")
    return ModelURI(URIScheme.pvc, match["claim"], match["path"] or "")


_PARSERS = {
    URIScheme.huggingface: _parse_hub,
    URIScheme.hf: _parse_hub,
    URIScheme.s3: _parse_s3,
    URIScheme.file: _parse_file,
    URIScheme.store: _parse_store,
    URIScheme.pvc: _parse_pvc,
}


class Frozen(BaseModel):
    """Base of every contract model: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


#: Plain env names that look like credentials. They must travel as secret references instead.
SECRET_NAME_RE = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)", re.IGNORECASE
)

#: Validation-context key that lets plain envs with secret-looking names through (settings decide).
ALLOW_SECRET_ENVS = "allow_plain_secret_envs"


class EnvVar(Frozen):
    """A plain environment variable for the model server or training job."""

    name: EnvName
    value: Annotated[str, Field(max_length=4096)]

    @field_validator("name")
    @classmethod
    def _no_secrets_in_clear(cls, name: str, info: ValidationInfo) -> str:
        allowed = bool(info.context and info.context.get(ALLOW_SECRET_ENVS))
        if SECRET_NAME_RE.search(name) and not allowed:
            raise ValueError(
                f"env {name!r} looks like a secret; pass it as a secret reference "
                f"(secret_refs: [{{env: {name}, secret: <k8s-secret>, key: <key>}}]) so it never travels in clear"
            )
        return name


class SecretRef(Frozen):
    """A reference to a key of a Kubernetes Secret, exposed to the container as an env variable.

    Example: `{"env": "HF_TOKEN", "secret": "hf-token", "key": "token"}`. The value never travels in an
    event; the local backend reads it from its secrets directory or the worker's environment.
    """

    env: EnvName
    secret: DNSLabel
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)]
