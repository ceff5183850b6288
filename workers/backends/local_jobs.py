"""The `local` job backend: each training job is a `python -m training SPEC.json` process on this machine.

Everything about a run lives in `<state_dir>/train-runs/<run id>/`: the spec, the job's log (`job.log`,
stdout and stderr), its scratch folder (`work/`, removed when the job ends) and `record.json` (pid,
start time, time limit, how much of the log has been relayed). Jobs run in their own session, so a
restarted worker finds them still running and adopts them; the outcome is read from the job's
protocol lines, not from an exit code only the parent would see.

Secret references are read from `<state_dir>/secrets/<secret>/<key>` or, failing that, from the
worker's environment under the same variable name (as for local model servers); their values go to
the job's environment only, never to a log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from schemas.settings import Settings
from schemas.types import SecretRef
from training.protocol import Progress, parse_line
from workers.backends.base import Applied, BackendName, FollowPolicy, Observation
from workers.backends.jobs import OnProgress, TrainJob, outcome_from_log
from workers.backends.processes import (
    Children,
    file_lock,
    read_json_record,
    read_secret,
    stop_group,
    write_json_atomic,
)
from workers.observability import get_logger, metered, redact

log = get_logger(__name__)

POLL_INTERVAL_S = 0.2
#: How much of the log end is scanned for the job's result or error line once it has exited.
OUTCOME_SCAN_BYTES = 256_000


@dataclass(frozen=True)
class RunRecord:
    """A local training run as recorded in its run directory."""

    run_id: str
    pid: int
    event_id: str
    started_at: float
    timeout_s: float
    log: str
    offset: int = 0
    cancelled: bool = False
    timed_out: bool = False


class LocalJobs:
    """Run training jobs as local processes.

    Args:
        settings: state directory, train timeouts and log tail size, stop grace period.
        environ: what jobs inherit and where secret references fall back to (the worker's environment).
    """

    name: BackendName = "local"
    metric_name = "local-jobs"  # the backend label of modelbus_backend_operations_total

    def __init__(self, settings: Settings, *, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.root = Path(settings.state_dir) / "train-runs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.secrets_dir = Path(settings.state_dir) / "secrets"
        self._environ = os.environ if environ is None else environ
        self._children = Children()
        train = settings.train
        self.follow_policy = FollowPolicy(train.timeout_s, train.watch_window_s, train.recheck_delay_s)

    # -- state ----------------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def read(self, run_id: str) -> RunRecord | None:
        return read_json_record(self.run_dir(run_id) / "record.json", RunRecord)

    def _write(self, record: RunRecord) -> None:
        write_json_atomic(self.run_dir(record.run_id) / "record.json", asdict(record))

    @contextlib.contextmanager
    def _locked(self, run_id: str) -> Iterator[None]:
        """One submit/follow/cancel per run at a time, across threads and worker processes."""
        self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        with file_lock(self.run_dir(run_id) / "lock"):
            yield

    def alive(self, record: RunRecord) -> bool:
        """Whether the recorded process still runs (and is ours: a recycled pid does not count)."""
        run_id = record.run_id.encode()
        return self._children.alive(record.pid, lambda cmdline: b"training" in cmdline and run_id in cmdline)

    # -- submit ---------------------------------------------------------------------------------------
    def _secret(self, ref: SecretRef) -> str:
        return read_secret(ref, secrets_dir=self.secrets_dir, environ=self._environ)

    def _env(self, job: TrainJob) -> dict[str, str]:
        request = job.event.data
        threads = str(job.profile.cpu_threads(os.cpu_count() or 1))
        env = {**self._environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads}
        env.update({e.name: e.value for e in request.envs})
        env.update({ref.env: self._secret(ref) for ref in request.secret_refs})
        return env

    @metered("submit")
    def submit(self, job: TrainJob) -> Applied:
        """Start the job's process, or adopt the run already recorded under its run id."""
        with self._locked(job.run_id):
            current = self.read(job.run_id)
            if current is not None:
                log.info("run %s already exists (pid %d); adopting it", job.run_id, current.pid)
                return Applied(created=False, changed=False)
            env = self._env(job)
            run_dir = self.run_dir(job.run_id)
            spec = job.spec.model_copy(update={"work_dir": str(run_dir / "work")})
            spec_path = run_dir / "spec.json"
            spec_path.write_text(spec.to_json())
            log_path = run_dir / "job.log"
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    [sys.executable, "-m", "training", str(spec_path)], cwd=run_dir, env=env,
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # outlives a worker restart; stopped as a group
                )
            self._children.add(process)
            self._write(RunRecord(run_id=job.run_id, pid=process.pid, event_id=job.event.id, started_at=time.time(),
                                  timeout_s=job.timeout_s, log=str(log_path)))
            log.info("started training run %s (pid %d)", job.run_id, process.pid)
            return Applied(created=True, changed=True)

    # -- follow ---------------------------------------------------------------------------------------
    @metered("follow")
    def follow(self, run_id: str, window_s: float, on_progress: OnProgress) -> Observation:
        """Relay progress until the process ends, the run's time limit passes, or the window ends."""
        end = time.monotonic() + window_s
        while True:
            with self._locked(run_id):
                record = self.read(run_id)
                if record is None:
                    return Observation("missing", reason="NotFound", message=f"no local training run {run_id}")
                running = self.alive(record)
                record = self._relay(record, on_progress)
                if not running:
                    return self._ended(record)
                if time.time() - record.started_at > record.timeout_s:
                    log.warning("run %s passed its %.0fs limit; stopping it", run_id, record.timeout_s)
                    self._write(replace(record, timed_out=True))
                    self._stop(record)
                    continue
            if time.monotonic() >= end:
                return Observation("pending", reason="Running", message="the training job is running")
            time.sleep(POLL_INTERVAL_S)

    def _relay(self, record: RunRecord, on_progress: OnProgress) -> RunRecord:
        """Pass the progress lines written since the last look to `on_progress`; remember how far we read."""
        try:
            with open(record.log, "rb") as fh:
                fh.seek(record.offset)
                chunk = fh.read()
        except OSError:
            return record
        complete = chunk[: chunk.rfind(b"\n") + 1]
        if not complete:
            return record
        for line in complete.decode(errors="replace").splitlines():
            parsed = parse_line(line)
            if isinstance(parsed, Progress):
                on_progress(parsed)
        record = replace(record, offset=record.offset + len(complete))
        self._write(record)
        return record

    def _ended(self, record: RunRecord) -> Observation:
        child = self._children.pop(record.pid)
        code = child.wait() if child is not None else None
        shutil.rmtree(self.run_dir(record.run_id) / "work", ignore_errors=True)
        tail = self.log_tail(record)
        if record.cancelled:
            return Observation("failed", reason="Cancelled", message=f"training run {record.run_id} was cancelled",
                               details={"log_tail": tail})
        if record.timed_out:
            return Observation("failed", reason="Timeout",
                               message=f"training run {record.run_id} ran longer than {record.timeout_s:.0f}s",
                               details={"log_tail": tail})
        ended = f"the training process exited{f' with code {code}' if code is not None else ''} without a result"
        return outcome_from_log(self._log_end(record).splitlines(), tail=tail, ended=ended)

    def _log_end(self, record: RunRecord, size: int = OUTCOME_SCAN_BYTES) -> str:
        try:
            with open(record.log, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - size))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, record: RunRecord) -> str:
        return redact(self._log_end(record, self.settings.train.log_tail_bytes)).strip() or "(no log)"

    # -- cancel ---------------------------------------------------------------------------------------
    @metered("cancel")
    def cancel(self, run_id: str) -> bool:
        with self._locked(run_id):
            record = self.read(run_id)
            if record is None or not self.alive(record):
                return False
            self._write(replace(record, cancelled=True))
            self._stop(record)
            return True

    def _stop(self, record: RunRecord) -> None:
        """SIGTERM the job's process group, then SIGKILL what is left after the grace period."""
        stop_group(record.pid, grace_s=self.settings.serving.stop_timeout_s, alive=lambda: self.alive(record))

    def running(self) -> list[RunRecord]:
        records = (self.read(p.name) for p in sorted(self.root.iterdir()) if p.is_dir())
        return [r for r in records if r is not None and self.alive(r)]

    def close(self) -> None:
        """Nothing to release: runs keep going for the next worker to adopt."""
