"""Start and stop ``python -m serving`` as a real process, for any area's tests.

``running_server(args)`` picks a free port, starts the server, waits until
``/v2/health/ready`` answers (or the process dies, which raises with its output), yields the base
URL and stops the process afterwards. ``start_server`` is the non-blocking half, so a fixture can
start several servers at once and wait for them together.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A ``python -m serving`` child process with its output in a temporary log file."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="serving-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", *args, "--http_port", str(self.port), "--host", "127.0.0.1"],
            stdout=self._log, stderr=subprocess.STDOUT, env=child_env, cwd=str(REPO_ROOT),
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> str:
        """Block until the server answers ``/v2/health/ready``; return its base URL.

        Raises:
            RuntimeError: the process exited first, or ``timeout`` seconds passed.
        """
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"serving exited with {self.process.returncode} before listening:\n{self.output()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.base_url}/v2/health/ready").status_code == 200:
                        return self.base_url
                time.sleep(0.1)
        raise RuntimeError(f"serving not ready after {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()
        self.log_path.unlink(missing_ok=True)


def start_server(args: Sequence[str], *, env: Mapping[str, str] | None = None) -> ServerProcess:
    """Start a server without waiting; call ``wait_ready()`` then ``stop()``."""
    return ServerProcess(args, env=env)


@contextlib.contextmanager
def running_server(args: Sequence[str], *, env: Mapping[str, str] | None = None,
                   timeout: float = 90.0) -> Iterator[str]:
    """Run ``python -m serving ARGS`` on a free port for the duration of the block.

    Example:
        >>> with running_server(["--model_name", "m", "--model_dir", str(path)]) as url:  # doctest: +SKIP
        ...     httpx.post(f"{url}/v1/models/m:predict", json={"instances": ["hi"]})
    """
    server = start_server(args, env=env)
    try:
        yield server.wait_ready(timeout)
    finally:
        server.stop()
