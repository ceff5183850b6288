"""`modelbus invoke SERVICE --json ...`: call a served model through the invoke worker."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from producers.cli.common import fail, load_json_arg, settings, user_errors
from schemas.types import InvokeProtocol


def invoke(
    service: Annotated[str, typer.Argument(help="Service name, or a server base URL (http://...).")],
    body: Annotated[str, typer.Option("--json", "-j", help="The request body as JSON, or @file.json (@- for stdin).")],
    protocol: Annotated[
        InvokeProtocol | None,
        typer.Option(help="v2, v1, openai.completions, openai.chat or openai.embeddings; guessed from the body."),
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Model name on the server (default: the service's).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 60.0,
) -> None:
    """Send one InvokeRequested, wait for its result and print the model's response body as JSON.

    Exits 1 with the reason when the request fails (e.g. UnknownService, UpstreamError), 2 on timeout.
    """
    from producers.client import ModelBus, RequestFailed

    payload = load_json_arg(body)
    if not isinstance(payload, dict):
        fail("--json must be a JSON object")
    url = service if service.startswith(("http://", "https://")) else None
    with user_errors(), ModelBus(settings(), source="/modelbus/cli") as bus:
        try:
            response = bus.invoke(None if url else service, json=payload, protocol=protocol, timeout=timeout,
                                  model_name=model_name, url=url)
        except RequestFailed as exc:
            fail(str(exc))
    typer.echo(json.dumps(response, indent=2))
