"""The server's settings: command-line flags plus the few environment variables it honours.

Every environment variable the server honours is named here (modelbus settings for storage, plus
KServe's ``HF_TOKEN`` and ``KSERVE_OPENAI_ROUTE_PREFIX``; ``cli.py`` hands ``os.environ`` in), so what the
server depends on is visible in one place. The flag names are KServe huggingfaceserver's (see ``cli.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from serving.tasks import Task

DEFAULT_MODEL_DIR = "/mnt/models"


@dataclass(frozen=True)
class StorageOptions:
    """Where remote model sources come from and where downloads are cached.

    Attributes:
        cache_dir: downloads from ``s3://`` land under ``cache_dir/s3/<bucket>/<key>``.
        s3_endpoint_url: an S3-compatible endpoint (MinIO, moto, ...); None means AWS.
        s3_region: the S3 region. Credentials come from boto3's own chain (``AWS_*`` variables,
            profiles, instance roles).
        hf_token: the Hugging Face token for gated or private repositories. Never logged.
    """

    cache_dir: Path
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    hf_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> StorageOptions:
        """modelbus settings (``MODELBUS_STATE_DIR``, ``MODELBUS_STORAGE__S3_ENDPOINT_URL``,
        ``MODELBUS_STORAGE__S3_REGION``; ``AWS_ENDPOINT_URL`` as a fallback endpoint) plus
        ``HF_TOKEN`` (or ``HUGGING_FACE_HUB_TOKEN``), the variable KServe's runtime reads.
        The cache is ``<state_dir>/model-cache``."""
        from schemas.settings import Settings

        env = os.environ
        settings = Settings()
        return cls(
            cache_dir=Path(settings.state_dir) / "model-cache",
            s3_endpoint_url=settings.storage.s3_endpoint_url or env.get("AWS_ENDPOINT_URL") or None,
            s3_region=settings.storage.s3_region,
            hf_token=env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or None,
        )


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to load one model and serve it.

    Attributes mirror the flags; ``max_batch_size``/``max_batch_wait_ms`` drive the dynamic
    batcher (``max_batch_size=1`` turns batching off), ``torch_threads`` None means one intra-op
    thread per available CPU.
    """

    model_name: str = "model"
    model_id: str | None = None
    model_dir: str = DEFAULT_MODEL_DIR
    model_revision: str | None = None
    tokenizer_revision: str | None = None
    task: Task | None = None
    backend: str = "auto"
    max_model_len: int | None = None
    dtype: str = "auto"
    return_probabilities: bool = False
    return_raw_logits: bool = False
    disable_lower_case: bool = False
    disable_special_tokens: bool = False
    trust_remote_code: bool = False
    host: str = "0.0.0.0"
    http_port: int = 8080
    max_batch_size: int = 32
    max_batch_wait_ms: float = 0.0
    torch_threads: int | None = None
    openai_route_prefix: str = "/openai"
    allow_long_max_model_len: bool = False
    log_level: str = "info"
    storage: StorageOptions = field(default_factory=lambda: StorageOptions(cache_dir=Path(".modelbus/model-cache")))

    @property
    def source(self) -> str:
        """The model source to resolve: ``--model_id`` when given, else ``--model_dir`` (as KServe)."""
        return self.model_id or self.model_dir


def openai_prefix_from_env(environ: Mapping[str, str]) -> str:
    """``KSERVE_OPENAI_ROUTE_PREFIX`` as KServe reads it: default ``/openai``, "" removes it."""
    prefix = environ.get("KSERVE_OPENAI_ROUTE_PREFIX", "/openai").rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


def allow_long_max_model_len(environ: Mapping[str, str]) -> bool:
    """``ALLOW_LONG_MAX_MODEL_LEN=1`` lets ``--max_model_len`` exceed the config's limit, as in KServe."""
    return environ.get("ALLOW_LONG_MAX_MODEL_LEN") == "1"
