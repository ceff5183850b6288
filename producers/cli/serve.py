"""`modelbus serve`: the embedded KServe-compatible model server, in the foreground."""

from __future__ import annotations

import typer


def serve(ctx: typer.Context) -> None:
    """Run the model server with KServe huggingfaceserver flags (e.g. --model_dir DIR --model_name NAME).

    Every argument is passed to `python -m serving`; `modelbus serve --help` lists them.
    """
    from serving.cli import main

    raise typer.Exit(main(list(ctx.args)))
