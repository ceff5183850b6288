"""Fixtures of the train area: a local S3-compatible server (moto), a train + deploy worker, a client."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from producers.client import ModelBus
from schemas.settings import BrokerSettings, Settings, TrainSettings
from tests.conftest import running_worker
from tests.models import build_tiny_classifier
from workers.app import create_app
from workers.backends.local_jobs import LocalJobs
from workers.deploy import tasks as deploy_tasks
from workers.train import tasks as train_tasks


@dataclass(frozen=True)
class S3:
    endpoint_url: str
    bucket: str

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on a free local port, for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on the moto server; credentials in the environment (inherited by job processes)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"modelbus-{uuid.uuid4().hex[:12]}"
    store = S3(moto_endpoint, bucket)
    store.client().create_bucket(Bucket=bucket)
    return store


@pytest.fixture(scope="module")
def worker_settings(broker_url: str, tmp_path_factory: pytest.TempPathFactory, topology: list[str]) -> Settings:
    return Settings(
        broker=BrokerSettings(url=broker_url, connect_attempts=3, retry_delay_s=0.2),
        state_dir=tmp_path_factory.mktemp("train-worker-state"),
        backend="local",
        task_max_retries=1,
        # short windows, so a fine-tune is followed across several follow-up tasks
        train=TrainSettings(watch_window_s=5.0, recheck_delay_s=1.0, progress_interval_s=0.0),
    )


@pytest.fixture(scope="module")
def worker(worker_settings: Settings) -> Iterator[Settings]:
    """A Celery worker with the train and deploy tasks; jobs never reach for the network."""
    app = create_app(worker_settings, ("deploy", "train"), register_tasks=False)
    emitter = app.conf.modelbus_emitter
    deploy_tasks.register(app, settings=worker_settings, emitter=emitter)
    jobs = LocalJobs(worker_settings, environ={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    train_tasks.register(app, settings=worker_settings, emitter=emitter, backend=jobs)
    with running_worker(app, concurrency=2):
        yield worker_settings
    for server in app.conf.modelbus_deploy_backend.running():
        app.conf.modelbus_deploy_backend.delete(server.service)
    for run in jobs.running():
        jobs.cancel(run.run_id)
    emitter.close()


@pytest.fixture
def bus(worker: Settings) -> Iterator[ModelBus]:
    with ModelBus(worker) as client:
        yield client


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny-base"))
