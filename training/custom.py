"""Running a user's training module: fetch its source, install its requirements, call `train(context)`.

The module is the platform's python-job source (inline, or a file:// / s3:// path); its `requirements`
are pip-installed into the job's scratch directory (already-satisfied ones are skipped, so a job does not
reinstall what the trainer image ships). An exception in user code becomes `CustomCodeFailed` with the
traceback in the log; returning without `context.log_model(...)` is `NoModelLogged`.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
import types
from importlib import metadata
from pathlib import Path

from schemas.events import CustomCode
from training.context import TrainContext
from training.errors import (
    CODE_FAILED,
    CODE_NOT_FOUND,
    EXIT_CRASH,
    NO_MODEL_LOGGED,
    REQUIREMENTS_FAILED,
    SpecError,
)


def missing_requirements(requirements: list[str]) -> list[str]:
    """The requirements not already satisfied here (paths and URLs always count as missing)."""
    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for spec in requirements:
        try:
            req = Requirement(spec)
        except InvalidRequirement:
            missing.append(spec)
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue  # not meant for this platform
        if req.url:
            missing.append(spec)
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(spec)
            continue
        if not req.specifier.contains(installed, prereleases=True):
            missing.append(spec)
    return missing


def install_requirements(requirements: list[str], target: Path) -> None:
    """pip-install what is missing into `target` and put it first on `sys.path`."""
    missing = missing_requirements(requirements)
    if not missing:
        return
    target.mkdir(parents=True, exist_ok=True)
    print(f"installing requirements: {' '.join(missing)}", flush=True)
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet",
         "--target", str(target), *missing],
        stdout=sys.stdout, stderr=subprocess.STDOUT, check=False,
    )
    if completed.returncode != 0:
        raise SpecError(REQUIREMENTS_FAILED, f"pip could not install {missing} (exit {completed.returncode}); "
                        "see the log")
    sys.path.insert(0, str(target))


def load_source(code: CustomCode, ctx: TrainContext) -> tuple[str, str]:
    """The module's source text and a file name for tracebacks."""
    if code.source is not None:
        return code.source, "<inline train module>"
    assert code.uri is not None  # the schema guarantees exactly one of source/uri
    try:
        path = ctx.fetch(code.uri)
    except FileNotFoundError as exc:
        raise SpecError(CODE_NOT_FOUND, f"training code {code.uri} does not exist") from exc
    if path.is_dir():
        raise SpecError(CODE_NOT_FOUND, f"training code {code.uri} is a folder; point at the .py file")
    return path.read_text(), str(path)


def run(code: CustomCode, ctx: TrainContext) -> None:
    """Execute the user's handler with `ctx`; afterwards `ctx.logged` describes the logged model."""
    source, filename = load_source(code, ctx)
    install_requirements(list(code.requirements), ctx.work_dir / "site-packages")
    module = types.ModuleType("modelbus_user_training")
    module.__file__ = filename
    try:
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - running user code is the job
    except Exception as exc:
        traceback.print_exc()
        raise SpecError(CODE_FAILED, f"the training module failed to import: {type(exc).__name__}: {exc}") from exc
    handler = getattr(module, code.handler, None)
    if not callable(handler):
        raise SpecError(CODE_FAILED, f"the training module defines no function {code.handler!r}")
    try:
        returned = handler(ctx)
    except SpecError:
        raise
    except Exception as exc:
        traceback.print_exc()
        raise SpecError(CODE_FAILED, f"{code.handler}(context) raised {type(exc).__name__}: {exc}",
                        exit_code=EXIT_CRASH) from exc
    if isinstance(returned, dict):
        for key, value in returned.items():
            ctx.log_metric(str(key), value)
    if ctx.logged is None:
        raise SpecError(NO_MODEL_LOGGED, f"{code.handler}(context) returned without calling context.log_model(...)")
