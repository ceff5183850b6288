"""`modelbus deploy`, `modelbus undeploy`, `modelbus services list`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from producers.cli.common import console, fail, load_json_arg, settings, user_errors
from producers.client import ModelBus, RequestFailed, Service

services_app = typer.Typer(help="Services modelbus runs (the service registry).", no_args_is_help=True)


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            fail(f"{option} expects KEY=VALUE, got {value!r}")
        pairs.append((key, rest))
    return pairs


def _secret_refs(values: list[str]) -> list[dict[str, str]]:
    refs = []
    for env, ref in _pairs(values, "--secret-ref"):
        secret, sep, key = ref.partition(":")
        if not sep or not secret or not key:
            fail(f"--secret-ref expects ENV=secret:key, got {env}={ref!r}")
        refs.append({"env": env, "secret": secret, "key": key})
    return refs


def _print_ready(service: Service, as_json: bool) -> None:
    ready = service.ready
    if as_json:
        console.print_json(ready.model_dump_json(exclude_none=True))
        return
    console.print(f"[bold green]ready[/] {ready.service} ({ready.backend}) at {ready.url}", soft_wrap=True)
    if ready.external_url:
        console.print(f"  external: {ready.external_url}", soft_wrap=True)
    for name, url in ready.endpoints.model_dump(exclude_none=True).items():
        console.print(f"  {name}: {url}", soft_wrap=True)


def deploy(  # noqa: PLR0917 - typer maps each option to a parameter
    name: Annotated[str, typer.Argument(help="Service name (DNS-1123 label).")],
    path: Annotated[str, typer.Option(help="Model: huggingface://org/name, s3://, file://, store://, pvc://")],
    model_name: Annotated[str, typer.Option(help="Name the server registers (--model_name).")] = "model",
    task: Annotated[str | None, typer.Option(help="Task, e.g. sequence_classification; inferred when absent.")]
    = None,
    profile: Annotated[str | None, typer.Option(help="Resource profile, e.g. 1xa100 (settings' default).")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas of the server.")] = 1,
    backend: Annotated[str | None, typer.Option(help="Inference backend: auto, huggingface or vllm.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="K=V environment variable (repeatable).")] = None,
    secret_ref: Annotated[
        list[str] | None, typer.Option("--secret-ref", help="ENV=secret:key, e.g. HF_TOKEN=hf-token:token.")
    ] = None,
    runtime_arg: Annotated[
        list[str] | None, typer.Option("--runtime-arg", help="Extra server flag, verbatim (repeatable).")
    ] = None,
    runtime: Annotated[
        str | None, typer.Option(help='Runtime options as JSON or @file, e.g. {"return_probabilities": true}.')
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="k=v label of the service (repeatable).")]
    = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for ServiceReady or DeployFailed.")] = False,
    timeout: Annotated[float, typer.Option(help="How long --wait waits, seconds.")] = 900.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ServiceReady event data as JSON.")] = False,
) -> None:
    """Serve a model as a named service (publishes DeployRequested)."""
    fields: dict[str, Any] = {"model_name": model_name, "replicas": replicas}
    options: dict[str, Any] = dict(load_json_arg(runtime)) if runtime else {}
    if runtime_arg:
        options["extra_args"] = [*options.get("extra_args", []), *runtime_arg]
    for key, value in (("task", task), ("profile", profile), ("backend", backend)):
        if value is not None:
            fields[key] = value
    fields.update(
        runtime=options,
        envs=[{"name": k, "value": v} for k, v in _pairs(env or [], "--env")],
        secret_refs=_secret_refs(secret_ref or []),
        labels=dict(_pairs(label or [], "--label")),
    )
    with user_errors(), ModelBus(settings()) as bus:
        try:
            outcome = bus.deploy(name, path=path, wait=wait, timeout=timeout, **fields)
        except RequestFailed as exc:
            fail(f"deploy failed: {exc.reason}: {exc.event.data.message}")
        if isinstance(outcome, Service):
            _print_ready(outcome, as_json)
        else:
            console.print(f"requested deploy of {name} (event {outcome.id})", soft_wrap=True)


def undeploy(
    name: Annotated[str, typer.Argument(help="Service name.")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for ServiceDeleted.")] = False,
    timeout: Annotated[float, typer.Option(help="How long --wait waits, seconds.")] = 300.0,
) -> None:
    """Stop and delete a service (publishes UndeployRequested)."""
    with user_errors(), ModelBus(settings()) as bus:
        try:
            outcome = bus.undeploy(name, wait=wait, timeout=timeout)
        except RequestFailed as exc:
            fail(f"undeploy failed: {exc.reason}: {exc.event.data.message}")
    if not wait:
        console.print(f"requested undeploy of {name} (event {outcome.id})", soft_wrap=True)
    elif outcome.data.existed:
        console.print(f"deleted {name}", soft_wrap=True)
    else:
        console.print(f"{name} did not exist; nothing to delete", soft_wrap=True)


@services_app.command("list")
def services_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array of service records.")] = False,
) -> None:
    """Show every service: name, backend, status, URL, model, task, profile."""
    from workers.registry import ServiceRegistry

    records = ServiceRegistry(settings().state_dir).list()
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    table = Table("name", "backend", "status", "url", "model", "task", "profile")
    for r in records:
        status = r.status if r.status != "failed" else f"failed ({r.reason})"
        table.add_row(r.name, r.backend, status, r.url or "", f"{r.model_name} <- {r.path}", r.task or "",
                      r.profile or "")
    console.print(table)
