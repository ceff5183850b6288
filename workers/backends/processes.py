"""Process bookkeeping shared by the local backends (model servers and training jobs).

Both backends start children in their own session so that a restarted worker can adopt them, record
them in JSON files under the state directory, and must tell a still-running child from a recycled pid.
These helpers hold the parts that are the same for both; what identifies a process as ours (its
command line) and where records live stay with each backend.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from schemas.types import SecretRef
from workers.errors import PermanentError
from workers.observability import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: How often a stopping process group is checked while it has its grace period.
STOP_POLL_S = 0.05
#: How long reaping an exited child may block (it has exited or been killed by then).
REAP_TIMEOUT_S = 5.0


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path`: serialises work on one name across threads and worker processes."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_json_record(path: Path, record: Callable[..., T]) -> T | None:
    """The record written at `path` by `write_json_atomic`; None when there is none or it is unreadable."""
    try:
        return record(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        log.warning("ignoring an unreadable record %s: %s", path, exc)
        return None


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` next to `path` and rename it into place, so a reader never sees half a record."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_secret(ref: SecretRef, *, secrets_dir: Path, environ: Mapping[str, str]) -> str:
    """A secret's value from `<secrets_dir>/<secret>/<key>`, else from `environ[ref.env]`.

    The file wins so that an operator can provide secrets without restarting the worker; a secret found
    in neither place is a permanent failure that names it (but never a value).
    """
    path = secrets_dir / ref.secret / ref.key
    with contextlib.suppress(OSError):
        return path.read_text().rstrip("\n")
    value = environ.get(ref.env)
    if value is None:
        raise PermanentError(
            f"secret {ref.secret}/{ref.key} (for {ref.env}) is neither in {path} nor in the worker's environment",
            reason="SecretNotFound", details={"secret": ref.secret, "key": ref.key, "env": ref.env},
        )
    return value


class Children:
    """The processes this worker started, by pid, and liveness checks for recorded ones it did not.

    A child we started is asked directly (`poll`, which also reaps it once it exits); for a pid adopted from a
    record, `/proc` tells whether it is a live (non-zombie) process whose command line is ours, because
    after a reboot or a long pause the pid may belong to something else.
    """

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def add(self, process: subprocess.Popen[bytes]) -> None:
        self._children[process.pid] = process

    def pop(self, pid: int) -> subprocess.Popen[bytes] | None:
        return self._children.pop(pid, None)

    def alive(self, pid: int, owns: Callable[[bytes], bool]) -> bool:
        """Whether `pid` still runs and is ours (`owns` judges its NUL-separated command line)."""
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        proc = Path(f"/proc/{pid}")
        if not proc.exists():
            return True  # no procfs to double-check with
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError):
            return False
        return state != "Z" and owns(cmdline)

    def reap(self, pid: int) -> None:
        """Wait for a child we started so it does not linger as a zombie."""
        child = self._children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=REAP_TIMEOUT_S)


def stop_group(pid: int, *, grace_s: float, alive: Callable[[], bool],
               on_kill: Callable[[], None] | None = None) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL it if `alive()` still holds after `grace_s`.

    Children run in their own session, so the group also takes down anything they spawned.
    `on_kill` runs just before SIGKILL (to say that a process ignored the polite request).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and alive():
        time.sleep(STOP_POLL_S)
    if alive():
        if on_kill is not None:
            on_kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
