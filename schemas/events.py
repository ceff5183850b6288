"""The events of modelbus: one frozen model per event's `data`.

Each class carries its routing key (`deploy.requested`) and CloudEvents type
(`io.modelbus.deploy.requested`) as class variables; `EVENT_TYPES` lists them all and is what the
decoder, the topology and the AsyncAPI export are built from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AnyHttpUrl, AwareDatetime, Field, StringConstraints, model_validator

from schemas.types import (
    DNSLabel,
    Dtype,
    EnvVar,
    Frozen,
    InvokeProtocol,
    ModelName,
    ModelURI,
    SecretRef,
    ServiceName,
    ServingBackend,
    Task,
)

#: Machine-readable failure reason, e.g. `UnknownProfile`, `FailedToLoad`, `ReadinessTimeout`.
Reason = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=64)]
#: A queue name a reply goes to (AMQP default exchange).
QueueName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]+$", max_length=255)]
Message = Annotated[str, Field(max_length=8192)]
ProfileName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.\-]*$", max_length=63)]
Labels = Annotated[dict[Annotated[str, StringConstraints(max_length=63)], Annotated[str, Field(max_length=63)]],
                   Field(max_length=32)]


class Event(Frozen):
    """Base of every event payload."""

    routing_key: ClassVar[str]

    @classmethod
    def event_type(cls) -> str:
        """The CloudEvents `type` attribute, e.g. `io.modelbus.deploy.requested`."""
        return f"io.modelbus.{cls.routing_key}"


class Request(Event):
    """Base of the `*Requested` events: where the outcome should also be sent, and by when."""

    reply_to: QueueName | None = Field(
        default=None, description="Queue that also receives the outcome event (besides the exchange)."
    )
    deadline: AwareDatetime | None = Field(
        default=None, description="Give up (with a *Failed event, reason DeadlineExceeded) after this instant."
    )


class Failure(Event):
    """Base of the `*Failed` events."""

    reason: Reason
    message: Message
    retryable: bool = Field(default=False, description="Whether publishing the request again may succeed.")


# --------------------------------------------------------------------------------------------- deploy


class RuntimeOptions(Frozen):
    """Flags of the Hugging Face model server (KServe `huggingfaceserver`, or modelbus `serving`)."""

    max_model_len: Annotated[int, Field(ge=1, le=1_048_576)] | None = None
    dtype: Dtype | None = None
    return_probabilities: bool = False
    return_raw_logits: bool = False
    disable_lower_case: bool = False
    disable_special_tokens: bool = False
    trust_remote_code: bool = False
    model_revision: Annotated[str, Field(max_length=128)] | None = None
    tokenizer_revision: Annotated[str, Field(max_length=128)] | None = None
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        default=None, description="Server-side dynamic batching (modelbus serving only)."
    )
    max_batch_wait_ms: Annotated[float, Field(ge=0, le=10_000)] | None = None
    extra_args: Annotated[list[Annotated[str, Field(max_length=512)]], Field(max_length=64)] = Field(
        default_factory=list, description="Further server flags, passed through verbatim."
    )

    @model_validator(mode="after")
    def _exclusive_outputs(self) -> RuntimeOptions:
        if self.return_probabilities and self.return_raw_logits:
            raise ValueError("return_probabilities and return_raw_logits are mutually exclusive")
        return self


class DeployRequested(Request):
    """Serve a model as a named inference service (platform: `huggingfaceserve` function `.run("serve")`)."""

    routing_key: ClassVar[str] = "deploy.requested"

    service: ServiceName
    path: ModelURI = Field(description="Where the model is: huggingface://, hf://, s3://, file://, store://, pvc://")
    model_name: ModelName = Field(default="model", description="Name the server registers (`--model_name`).")
    task: Task | None = Field(default=None, description="Inferred from the model's config when absent.")
    backend: ServingBackend = ServingBackend.auto
    profile: ProfileName | None = Field(default=None, description="Resource profile; settings' default if absent.")
    replicas: Annotated[int, Field(ge=1, le=64)] = 1
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions)
    envs: Annotated[list[EnvVar], Field(max_length=64)] = Field(default_factory=list)
    secret_refs: Annotated[list[SecretRef], Field(max_length=32)] = Field(default_factory=list)
    labels: Labels = Field(default_factory=dict)


class ServiceEndpoints(Frozen):
    """Where a ready service answers. Generative tasks get OpenAI URLs, the others v1/v2 URLs."""

    v2_infer: str | None = None
    v1_predict: str | None = None
    openai_base: str | None = None
    openai_completions: str | None = None
    openai_chat: str | None = None
    openai_embeddings: str | None = None


class ServiceReady(Event):
    routing_key: ClassVar[str] = "service.ready"

    service: ServiceName
    model_name: ModelName
    backend: Literal["kserve", "local"]
    path: str
    task: Task | None = None
    profile: str | None = None
    url: str = Field(description="Base URL for callers inside the platform.")
    external_url: str | None = Field(default=None, description="Base URL from outside, when exposed.")
    endpoints: ServiceEndpoints


class DeployFailed(Failure):
    routing_key: ClassVar[str] = "deploy.failed"

    service: ServiceName
    details: dict[str, Any] = Field(default_factory=dict)


class UndeployRequested(Request):
    """Stop and delete a service (platform: `run.stop()` / delete)."""

    routing_key: ClassVar[str] = "undeploy.requested"

    service: ServiceName


class ServiceDeleted(Event):
    routing_key: ClassVar[str] = "service.deleted"

    service: ServiceName
    backend: Literal["kserve", "local"]
    existed: bool = Field(description="False when there was nothing to delete (the request was a no-op).")


# ---------------------------------------------------------------------------------------------- train


class DatasetSpec(Frozen):
    """A labelled dataset: a Hub id, or a CSV/JSONL/Parquet file or folder under file:// or s3://."""

    uri: Annotated[str, Field(min_length=1, max_length=2048)]
    format: Literal["csv", "jsonl", "json", "parquet"] | None = Field(
        default=None, description="Guessed from the file extension when absent."
    )
    split: Annotated[str, Field(max_length=64)] = "train"
    eval_split: Annotated[str, Field(max_length=64)] | None = None
    eval_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    text_column: Annotated[str, Field(max_length=128)] = "text"
    text_pair_column: Annotated[str, Field(max_length=128)] | None = None
    label_column: Annotated[str, Field(max_length=128)] = "label"
    max_samples: Annotated[int, Field(ge=1)] | None = None
    seed: int = 42


class HyperParameters(Frozen):
    epochs: Annotated[float, Field(gt=0, le=1000)] = 3.0
    learning_rate: Annotated[float, Field(gt=0, le=1.0)] = 5e-5
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 16
    max_length: Annotated[int, Field(ge=8, le=131_072)] = 128
    weight_decay: Annotated[float, Field(ge=0, le=1.0)] = 0.0
    warmup_ratio: Annotated[float, Field(ge=0, lt=1.0)] = 0.0
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] = 1
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    seed: int = 42


class CustomCode(Frozen):
    """A user training module with a `train(context)` handler, inline or at a file:// / s3:// path."""

    source: Annotated[str, Field(max_length=262_144)] | None = None
    uri: Annotated[str, StringConstraints(pattern=r"^(file|s3)://.+$", max_length=2048)] | None = None
    handler: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "train"
    requirements: Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=64)] = Field(
        default_factory=list
    )
    parameters: dict[str, Any] = Field(default_factory=dict, description="Passed to the handler as context.parameters.")

    @model_validator(mode="after")
    def _one_source(self) -> CustomCode:
        if (self.source is None) == (self.uri is None):
            raise ValueError("custom code needs exactly one of 'source' (inline) or 'uri'")
        return self


class DeployAfterTraining(Frozen):
    """Serve the freshly logged model: a DeployRequested is published for it (causation chained).

    That DeployRequested names the model as `store://project/model/name:version`, is caused by the
    ModelLogged, inherits the request's `reply_to`, and has the id
    `derived_id(<TrainRequested id>, DeployAfterTraining.id_purpose)`, so a client can wait for its outcome.
    """

    id_purpose: ClassVar[str] = "deploy.requested"

    service: ServiceName
    model_name: ModelName = "model"
    profile: ProfileName | None = None
    replicas: Annotated[int, Field(ge=1, le=64)] = 1
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions)


class TrainRequested(Request):
    """Fine-tune a model and log it to the registry (platform: a python job calling `log_model`)."""

    routing_key: ClassVar[str] = "train.requested"

    name: DNSLabel = Field(description="Name the trained model is logged under.")
    project: DNSLabel = "default"
    base_model: ModelURI
    task: Literal[Task.sequence_classification, Task.token_classification, Task.text_generation] = (
        Task.sequence_classification
    )
    dataset: DatasetSpec | None = None
    labels: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=4096)] | None = None
    hyperparameters: HyperParameters = Field(default_factory=HyperParameters)
    code: CustomCode | None = None
    profile: ProfileName | None = None
    envs: Annotated[list[EnvVar], Field(max_length=64)] = Field(default_factory=list)
    secret_refs: Annotated[list[SecretRef], Field(max_length=32)] = Field(default_factory=list)
    timeout_s: Annotated[float, Field(gt=0, le=7 * 86_400)] | None = None
    deploy: DeployAfterTraining | None = None

    @model_validator(mode="after")
    def _has_data_or_code(self) -> TrainRequested:
        if self.dataset is None and self.code is None:
            raise ValueError("a training request needs a dataset (built-in recipe) or custom code")
        return self


class ModelLogged(Event):
    routing_key: ClassVar[str] = "model.logged"

    project: DNSLabel
    name: DNSLabel
    version: Annotated[str, Field(max_length=64)]
    kind: Literal["huggingface"] = "huggingface"
    path: str = Field(description="Where the artefacts are (file:// or s3://).")
    store_uri: str = Field(description="store://project/model/name:version, accepted by DeployRequested.")
    base_model: str
    task: Task | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    labels: list[str] | None = None
    created: datetime


class TrainFailed(Failure):
    routing_key: ClassVar[str] = "train.failed"

    project: DNSLabel
    name: DNSLabel
    log_tail: Annotated[str, Field(max_length=65_536)] | None = None


class TrainProgress(Event):
    """How a training job is going, relayed from the job's progress lines (informational, throttled).

    Sent to the requester's `reply_to` and the events exchange while the job runs; never an outcome.
    """

    routing_key: ClassVar[str] = "train.progress"

    project: DNSLabel
    name: DNSLabel
    run_id: Annotated[str, Field(max_length=63)] = Field(description="The training job (Kubernetes Job name).")
    epoch: float | None = None
    step: Annotated[int, Field(ge=0)] | None = None
    max_steps: Annotated[int, Field(ge=0)] | None = None
    loss: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="Evaluation metrics, when just computed.")


# --------------------------------------------------------------------------------------------- invoke


class InvokeRequested(Request):
    """Call a served model (platform: `run.invoke(json=...)`). The body is the protocol's JSON body."""

    routing_key: ClassVar[str] = "invoke.requested"

    service: ServiceName | None = None
    url: AnyHttpUrl | None = Field(default=None, description="Explicit base URL instead of a service name.")
    protocol: InvokeProtocol = InvokeProtocol.v2
    model_name: ModelName | None = Field(default=None, description="Defaults to the service's model name.")
    body: dict[str, Any]
    batch_id: Annotated[str, Field(max_length=128)] | None = None
    custom_id: Annotated[str, Field(max_length=512)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> InvokeRequested:
        if (self.service is None) == (self.url is None):
            raise ValueError("an invoke request needs exactly one of 'service' or 'url'")
        return self


class InvokeCompleted(Event):
    routing_key: ClassVar[str] = "invoke.completed"

    request_id: str = Field(description="The id of the InvokeRequested event this answers.")
    service: ServiceName | None = None
    url: str | None = None
    protocol: InvokeProtocol
    status_code: int = 200
    body: dict[str, Any]
    latency_ms: float
    batch_size: int = 1
    attempts: int = 1
    batch_id: str | None = None
    custom_id: str | None = None


class InvokeFailed(Failure):
    routing_key: ClassVar[str] = "invoke.failed"

    request_id: str
    service: ServiceName | None = None
    url: str | None = None
    protocol: InvokeProtocol | None = None
    status_code: int | None = None
    body: dict[str, Any] | None = None
    attempts: int = 0
    batch_id: str | None = None
    custom_id: str | None = None


EVENT_TYPES: tuple[type[Event], ...] = (
    DeployRequested,
    ServiceReady,
    DeployFailed,
    UndeployRequested,
    ServiceDeleted,
    TrainRequested,
    ModelLogged,
    TrainFailed,
    TrainProgress,
    InvokeRequested,
    InvokeCompleted,
    InvokeFailed,
)

#: Event class by its CloudEvents type, by its routing key, and by its class name.
BY_TYPE: dict[str, type[Event]] = {cls.event_type(): cls for cls in EVENT_TYPES}
BY_ROUTING_KEY: dict[str, type[Event]] = {cls.routing_key: cls for cls in EVENT_TYPES}
BY_NAME: dict[str, type[Event]] = {cls.__name__: cls for cls in EVENT_TYPES}


def event_class(name: str) -> type[Event]:
    """Look an event class up by class name (`DeployRequested`), routing key or CloudEvents type."""
    cls = BY_NAME.get(name) or BY_ROUTING_KEY.get(name) or BY_TYPE.get(name)
    if cls is None:
        known = ", ".join(BY_NAME)
        raise KeyError(f"unknown event type {name!r}; known: {known}")
    return cls
