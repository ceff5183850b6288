"""The `local` backend: each service is a `python -m serving` process on this machine.

The server gets the same flags KServe's runtime would (`workers.manifests.server_args`), a free port
on `settings.serving.host`, and its output in `<state_dir>/local/<service>.log`. What runs is recorded
in `<state_dir>/local/<service>.json` (pid, port, spec fingerprint); servers run in their own session,
so a restarted worker finds them still running and adopts them instead of starting duplicates.

Model locations: Hub ids become `--model_id` (the server resolves them through the local Hugging Face
cache); `file://`, `s3://` and resolved `store://` references become `--model_dir`. Secret references
are read from `<state_dir>/secrets/<secret>/<key>` or, failing that, from the worker's environment
under the same variable name; their values go to the server's environment only, never to a log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from schemas.envelope import CloudEvent
from schemas.events import DeployRequested
from schemas.settings import Settings
from schemas.types import ModelURI, SecretRef, URIScheme
from workers.backends.base import Applied, BackendName, FollowPolicy, Observation
from workers.backends.processes import (
    Children,
    file_lock,
    read_json_record,
    read_secret,
    stop_group,
    write_json_atomic,
)
from workers.errors import PermanentError
from workers.manifests.server_args import runtime_args
from workers.observability import get_logger, metered, redact
from workers.profiles import Profile

log = get_logger(__name__)

LOG_TAIL_BYTES = 4000
POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class ServerRecord:
    """A local server as recorded in the state directory."""

    service: str
    pid: int
    host: str
    port: int
    fingerprint: str
    event_id: str
    started_at: float
    log: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def model_location_args(model: ModelURI) -> list[str]:
    """`--model_id` for Hub ids, `--model_dir` for folders the server can read itself."""
    if model.is_hub:
        args = [f"--model_id={model.repo}"]
        return [*args, f"--model_revision={model.revision}"] if model.revision else args
    if model.scheme is URIScheme.file:
        return [f"--model_dir={model.path}"]
    if model.scheme is URIScheme.s3:
        return [f"--model_dir={model}"]
    raise PermanentError(f"{model} cannot be served by the local backend (use file://, s3://, hf:// or store://)",
                         reason="UnsupportedModelPath")


class LocalBackend:
    """Serve models as local `python -m serving` processes.

    Args:
        settings: state directory, listening host, start/stop timeouts, storage endpoint.
        environ: where secret references fall back to (the worker's environment by default).
    """

    name: BackendName = "local"
    metric_name = "local"  # the backend label of modelbus_backend_operations_total

    def __init__(self, settings: Settings, *, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.root = Path(settings.state_dir) / "local"
        self.root.mkdir(parents=True, exist_ok=True)
        self.secrets_dir = Path(settings.state_dir) / "secrets"
        self._environ = os.environ if environ is None else environ
        self._children = Children()
        timeout = settings.serving.start_timeout_s
        self.follow_policy = FollowPolicy(timeout_s=timeout, window_s=min(30.0, timeout), recheck_delay_s=0.5)

    # -- state ----------------------------------------------------------------------------------------
    def _record_path(self, service: str) -> Path:
        return self.root / f"{service}.json"

    def read(self, service: str) -> ServerRecord | None:
        return read_json_record(self._record_path(service), ServerRecord)

    def _write(self, record: ServerRecord) -> None:
        write_json_atomic(self._record_path(record.service), asdict(record))

    @contextlib.contextmanager
    def _locked(self, service: str) -> Iterator[None]:
        """One apply/delete per service at a time, across threads and worker processes."""
        with file_lock(self.root / f"{service}.lock"):
            yield

    def alive(self, record: ServerRecord) -> bool:
        """Whether the recorded process still runs (and is ours: a recycled pid does not count)."""
        port_flag = f"--http_port={record.port}".encode()
        return self._children.alive(record.pid, lambda cmdline: port_flag in cmdline and b"serving" in cmdline)

    # -- apply ----------------------------------------------------------------------------------------
    def _argv(self, request: DeployRequested, profile: Profile, model: ModelURI) -> list[str]:
        serving = self.settings.serving
        args = runtime_args(request, server_batching=True)
        if request.runtime.max_batch_size is None:
            args.append(f"--max_batch_size={serving.max_batch_size}")
        if request.runtime.max_batch_wait_ms is None:
            args.append(f"--max_batch_wait_ms={serving.max_batch_wait_ms:g}")
        args.append(f"--torch_threads={profile.cpu_threads(os.cpu_count() or 1)}")
        return [*args, *model_location_args(model)]

    def _secret(self, ref: SecretRef) -> str:
        return read_secret(ref, secrets_dir=self.secrets_dir, environ=self._environ)

    def _env(self, request: DeployRequested) -> tuple[dict[str, str], str]:
        """The server's environment, and a fingerprint of it that contains no secret value."""
        env = {**self._environ, "PYTHONUNBUFFERED": "1"}
        if self.settings.storage.s3_endpoint_url:
            env["MODELBUS_STORAGE__S3_ENDPOINT_URL"] = self.settings.storage.s3_endpoint_url
        env.update({e.name: e.value for e in request.envs})
        secrets = {ref.env: self._secret(ref) for ref in request.secret_refs}
        env.update(secrets)
        digest = hashlib.sha256()
        for e in request.envs:
            digest.update(f"{e.name}={e.value}\0".encode())
        for name, value in sorted(secrets.items()):
            digest.update(f"{name}:{hashlib.sha256(value.encode()).hexdigest()}\0".encode())
        return env, digest.hexdigest()

    @metered("apply")
    def apply(self, event: CloudEvent[DeployRequested], profile: Profile, model: ModelURI) -> Applied:
        """Start the server, or keep (adopt) a running one that already serves the same spec."""
        request = event.data
        argv = self._argv(request, profile, model)
        env, env_digest = self._env(request)
        fingerprint = hashlib.sha256(json.dumps([argv, env_digest]).encode()).hexdigest()
        with self._locked(request.service):
            current = self.read(request.service)
            if current is not None and self.alive(current):
                if current.fingerprint == fingerprint:
                    log.info("%s already runs with this spec (pid %d); adopting it", request.service, current.pid)
                    return Applied(created=False, changed=False)
                log.info("%s runs with another spec; replacing it", request.service)
                self._stop(current)
            host = self.settings.serving.host
            port = free_port(host)
            log_path = self.root / f"{request.service}.log"
            command = [sys.executable, "-m", "serving", *argv, f"--http_port={port}", f"--host={host}"]
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    start_new_session=True,  # outlives a worker restart; stopped as a group
                )
            self._children.add(process)
            self._write(ServerRecord(service=request.service, pid=process.pid, host=host, port=port,
                                     fingerprint=fingerprint, event_id=event.id, started_at=time.time(),
                                     log=str(log_path)))
            log.info("started %s (pid %d) on %s:%d", request.service, process.pid, host, port)
            return Applied(created=current is None, changed=True)

    # -- follow ---------------------------------------------------------------------------------------
    @metered("follow")
    def follow(self, name: str, window_s: float) -> Observation:
        """Poll the server's `/v2/health/ready` until it answers, its process exits, or the window ends."""
        record = self.read(name)
        if record is None:
            return Observation("missing", reason="NotFound", message=f"no local server named {name}")
        end = time.monotonic() + window_s
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            while True:
                if not self.alive(record):
                    return Observation("failed", reason="ServerExited",
                                       message=f"the model server exited before it was ready:\n{self.log_tail(record)}",
                                       details={"log": record.log})
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    reply = http.get(f"{record.url}/v2/health/ready")
                    if reply.status_code == 200 and reply.json().get("ready") is True:
                        return Observation("ready", url=record.url)
                if time.monotonic() >= end:
                    return Observation("pending", reason="Loading", message="the model server is loading the model")
                time.sleep(POLL_INTERVAL_S)

    def log_tail(self, record: ServerRecord) -> str:
        try:
            with open(record.log, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - LOG_TAIL_BYTES))
                return redact(fh.read().decode(errors="replace")).strip()
        except OSError:
            return "(no log)"

    @metered("give_up")
    def give_up(self, name: str) -> None:
        """A server that failed or never became ready is stopped: it would only hold memory and a port."""
        self.delete(name)

    # -- delete ---------------------------------------------------------------------------------------
    @metered("delete")
    def delete(self, name: str) -> bool:
        with self._locked(name):
            record = self.read(name)
            if record is None:
                return False
            existed = self.alive(record)
            self._stop(record)
            self._record_path(name).unlink(missing_ok=True)
            return existed

    def _stop(self, record: ServerRecord) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left after the grace period."""
        if not self.alive(record):
            self._children.reap(record.pid)
            return
        stop_group(record.pid, grace_s=self.settings.serving.stop_timeout_s, alive=lambda: self.alive(record),
                   on_kill=lambda: log.warning("%s did not stop in time; killing it", record.service))
        self._children.reap(record.pid)
        log.info("stopped %s (pid %d)", record.service, record.pid)

    def running(self) -> list[ServerRecord]:
        """The recorded servers whose process still runs."""
        records = (self.read(p.stem) for p in sorted(self.root.glob("*.json")))
        return [r for r in records if r is not None and self.alive(r)]

    def close(self) -> None:
        """Nothing to release: servers keep running for the next worker to adopt."""
