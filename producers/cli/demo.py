"""`modelbus demo`: the whole workflow through events on the embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from producers.cli import common
from schemas.settings import Settings


def demo(
    workdir: Annotated[Path | None, typer.Option(help="Scratch folder (models, state, logs); a temp dir by default.")]
    = None,
    keep: Annotated[bool, typer.Option(help="Leave the services running at the end.")] = False,
) -> None:
    """Deploy, invoke, fine-tune, redeploy from the artefact store, run a batch, show status, clean up."""
    from producers.demo import run_demo

    configured = common.settings()
    cfg: Settings | None = configured
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = configured.model_copy(update={"state_dir": workdir / "state"})
    elif configured.state_dir == Settings().state_dir:
        cfg = None  # the demo makes its own scratch state directory
    with common.user_errors():
        try:
            run_demo(cfg, console=common.console, workdir=workdir, keep=keep)
        except RuntimeError as exc:
            common.fail(str(exc))
