"""The one settings object of modelbus, read from the environment (`MODELBUS_...`, nested with `__`).

It is plain data (no I/O library is imported here), shared by the client, the CLI and the workers.
Example: `MODELBUS_BROKER__URL=amqps://user:pass@rabbit:5671/prod` or `MODELBUS_BACKEND=kserve`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BrokerSettings(BaseModel):
    url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/%2F",
        description="AMQP URL; amqps:// enables TLS (verified against ca_file or the system CAs).",
    )
    ca_file: Path | None = Field(default=None, description="CA bundle for amqps:// (PEM).")
    cert_file: Path | None = Field(default=None, description="Client certificate for mutual TLS (PEM).")
    key_file: Path | None = Field(default=None, description="Client key for mutual TLS (PEM).")
    heartbeat_s: int = Field(default=30, description="AMQP heartbeat, seconds.")
    connect_timeout_s: float = Field(default=5.0, description="Socket connect timeout, seconds.")
    connect_attempts: int = Field(default=5, description="Connection attempts before giving up.")
    retry_delay_s: float = Field(default=1.0, description="First delay between attempts (doubles), seconds.")
    confirm_timeout_s: float = Field(default=30.0, description="Wait for a publisher confirm, seconds.")
    prefetch: int = Field(default=64, description="Unacked deliveries per consumer (AMQP basic.qos).")
    reply_queue_expires_s: float = Field(
        default=600.0,
        description="A client's reply queue is deleted by the broker after this long without a consumer "
        "(it survives reconnects shorter than this), seconds.",
        gt=0,
    )
    management_url: str | None = Field(
        default=None,
        description="RabbitMQ management API base URL; default http://<broker host>:15672 with the broker's user.",
    )


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class KubernetesSettings(BaseModel):
    namespace: str = Field(default="default", description="Namespace for InferenceServices and Jobs.")
    kubeconfig: Path | None = Field(default=None, description="Kubeconfig path; in-cluster config when unset.")
    context: str | None = Field(default=None, description="Kubeconfig context.")
    ready_timeout_s: float = Field(default=900.0, description="Wait for Ready=True before DeployFailed, seconds.")
    watch_window_s: float = Field(
        default=30.0, description="How long one follow-up task watches a service before re-scheduling itself, seconds."
    )
    recheck_delay_s: float = Field(
        default=5.0,
        description="Pause between two watch windows, during which no worker slot is held, seconds "
        "(whole seconds, at least 1: RabbitMQ native delayed delivery).",
    )
    api_timeout_s: float = Field(default=30.0, description="Timeout of one Kubernetes API call, seconds.")
    deployment_mode: Literal["Serverless", "RawDeployment"] = Field(
        default="RawDeployment", description="KServe deployment mode annotation."
    )
    service_account: str | None = Field(
        default=None, description="Service account of the predictor (storage credentials pattern)."
    )
    ingress_domain: str | None = Field(
        default=None, description="External domain: https://<service>-<namespace>.<domain>."
    )
    trainer_image: str = Field(default="ghcr.io/modelbus/trainer:0.1.0", description="Image of training Jobs.")
    job_ttl_s: int = Field(default=3600, description="ttlSecondsAfterFinished of training Jobs, seconds.")
    job_backoff_limit: int = Field(default=1, description="backoffLimit of training Jobs.")


class StorageSettings(BaseModel):
    root: str = Field(default="", description="Artefact store root: file:///path or s3://bucket/prefix. "
                      "Empty means <state_dir>/artifacts.")
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO, moto, ...).")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_credentials_secret: str | None = Field(
        default=None,
        description="Kubernetes Secret whose keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...) training Jobs "
        "get as environment variables (envFrom), to read datasets and write models on S3.",
    )


class ServingSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="Interface local model servers listen on.")
    start_timeout_s: float = Field(default=300.0, description="Wait for a local server to be ready, seconds.")
    stop_timeout_s: float = Field(
        default=10.0, description="Grace period between SIGTERM and SIGKILL when stopping a local server, seconds."
    )
    max_batch_size: int = Field(default=32, description="Server-side dynamic batch size.")
    max_batch_wait_ms: float = Field(
        default=0.0, description="Server-side batch window, milliseconds (0: batch what is queued, never wait)."
    )


class InvokeSettings(BaseModel):
    max_batch_size: int = Field(default=32, description="Requests per micro-batch.")
    max_wait_ms: float = Field(
        default=5.0, description="How long a micro-batch may wait to fill while its target is busy, milliseconds."
    )
    linger_ms: float = Field(
        default=2.5,
        description="While requests for a target arrive more often than once per this time, an idle target waits "
        "up to this long for a batch to form (fewer, larger calls under load; at low load a request is sent at "
        "once; 0: always at once), milliseconds.",
    )
    timeout_s: float = Field(default=30.0, description="Per upstream HTTP call, seconds.")
    max_attempts: int = Field(default=4, description="Attempts on connect errors, 429 and 5xx.")
    backoff_s: float = Field(default=0.2, description="First retry delay (exponential, with jitter), seconds.")
    concurrency_per_target: int = Field(default=8, description="Concurrent upstream calls per target.")
    breaker_failures: int = Field(default=5, description="Consecutive failures that open a target's circuit.")
    breaker_reset_s: float = Field(default=10.0, description="Time a circuit stays open, seconds.")
    backoff_max_s: float = Field(default=5.0, description="Longest delay between two attempts, seconds.")
    prefetch: int = Field(
        default=1000,
        description="InvokeRequested deliveries the worker holds unacked (AMQP basic.qos; quorum queues "
        "cap it at 2000). Large, so micro-batches can fill and a slow target does not starve the others.",
    )
    result_cache_size: int = Field(
        default=100_000, description="Recently answered request ids remembered to skip redeliveries, count."
    )


class BatchSettings(BaseModel):
    max_lines: int = Field(default=50_000, description="Requests per batch input file, count.")
    max_line_bytes: int = Field(
        default=1_000_000,
        description="Longest input line, bytes (a line also has to fit in one event, see max_event_bytes).",
    )
    max_file_bytes: int = Field(default=200_000_000, description="Largest batch input file, bytes.")
    completion_window: str = Field(
        default="24h", description="Default time a batch has to finish before it expires, e.g. 24h, 90m, 3600s."
    )
    max_in_flight: int = Field(
        default=1000,
        description="Requests of one batch sent but not yet answered; submission waits below it (0: unbounded). "
        "Keeps a big batch from burying interactive requests in the shared invoke queue, count.",
    )
    send_chunk: int = Field(
        default=200, description="Requests published (confirmed together) between two checks for cancel, count."
    )
    collect_chunk: int = Field(
        default=256, description="Results appended and fsynced per acknowledgement of the results queue, count."
    )
    poll_interval_s: float = Field(
        default=0.2, description="Pause between two looks at a batch that is waiting on others, seconds."
    )
    cancel_grace_s: float = Field(
        default=600.0,
        description="How long a cancelling batch waits for the results of requests already sent, seconds.",
    )
    results_ttl_s: int = Field(
        default=30 * 86_400,
        description="An unused per-batch results queue is deleted by the broker after this long, seconds.",
    )


class TrainSettings(BaseModel):
    timeout_s: float = Field(
        default=86_400.0,
        description="Longest a training job may run when the request sets no timeout_s (a Job's "
        "activeDeadlineSeconds; the local backend kills the process), seconds.",
    )
    watch_window_s: float = Field(
        default=30.0, description="How long one follow-up task watches a job before re-scheduling itself, seconds."
    )
    recheck_delay_s: float = Field(
        default=2.0, description="Pause between two watch windows, during which no worker slot is held, seconds."
    )
    log_tail_bytes: int = Field(default=8000, description="End of the job's log attached to TrainFailed, bytes.")
    progress_interval_s: float = Field(
        default=1.0, description="Least time between two TrainProgress events of one job, seconds."
    )


class Settings(BaseSettings):
    """Every knob of modelbus; each field documents unit and default."""

    model_config = SettingsConfigDict(env_prefix="MODELBUS_", env_nested_delimiter="__", extra="ignore")

    backend: Literal["local", "kserve"] = Field(default="local", description="Where services and jobs run.")
    state_dir: Path = Field(
        default=Path(".modelbus"), description="Local state: registries, local servers, artefacts, batches."
    )
    profiles_file: Path | None = Field(
        default=None, description="Resource profiles YAML; the packaged deploy/profiles.yaml when unset."
    )
    default_profile: str = Field(default="cpu-small", description="Profile of requests that name none.")
    source: str = Field(default="/modelbus", description="CloudEvents source of events this process emits.")
    allow_plain_secret_envs: bool = Field(
        default=False, description="Accept plain envs with secret-looking names (not recommended)."
    )
    max_event_bytes: int = Field(default=1_048_576, description="Largest accepted event, bytes.")
    log_format: Literal["json", "text"] = Field(default="json", description="Worker log format.")
    log_level: str = Field(default="INFO", description="Worker log level.")
    metrics_port: int | None = Field(default=None, description="Prometheus port of a worker (None: off).")
    task_max_retries: int = Field(default=5, description="Retries of a retryable task failure.")
    task_time_limit_s: float = Field(default=3600.0, description="Hard time limit of one task, seconds.")

    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    invoke: InvokeSettings = Field(default_factory=InvokeSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)

    @property
    def artifact_root(self) -> str:
        return self.storage.root or (self.state_dir.resolve() / "artifacts").as_uri()
