"""`modelbus train` (fine-tune and log a model, with a live progress display) and `modelbus models list|show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from producers.cli.common import console, err_console, fail, load_json_arg, settings, user_errors
from producers.cli.deploy import _pairs, _secret_refs
from producers.client import ModelBus, RequestFailed
from producers.trained import LoggedModel
from schemas.events import TrainProgress

models_app = typer.Typer(help="Model versions logged by training (the model registry).", no_args_is_help=True)


def _code(path: str | None, handler: str, requirements: list[str], parameters: str | None) -> dict[str, Any] | None:
    """A CustomCode block: a local file travels inline; file:// and s3:// URIs are read by the job."""
    if path is None:
        if requirements or parameters:
            fail("--requirement and --parameters need --code")
        return None
    code: dict[str, Any] = {"handler": handler, "requirements": requirements}
    if path.startswith(("file://", "s3://")):
        code["uri"] = path
    else:
        try:
            code["source"] = Path(path).read_text()
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}")
    if parameters:
        code["parameters"] = load_json_arg(parameters)
    return code


class _Display:
    """A rich progress bar fed by TrainProgress events (epoch, step of max_steps, loss, eval metrics)."""

    def __init__(self, name: str) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), console=err_console, transient=False,
        )
        self.task: TaskID = self.progress.add_task(f"training {name}", total=None, status="waiting for the job")

    def __call__(self, event: TrainProgress) -> None:
        parts = []
        if event.epoch is not None:
            parts.append(f"epoch {event.epoch:.2f}")
        if event.step is not None:
            parts.append(f"step {event.step}" + (f"/{event.max_steps}" if event.max_steps else ""))
        if event.loss is not None:
            parts.append(f"loss {event.loss:.4f}")
        parts.extend(f"{k} {v:.4f}" for k, v in event.metrics.items() if k in ("eval_loss", "eval_accuracy", "eval_f1"))
        self.progress.update(self.task, total=event.max_steps or None, completed=event.step or 0,
                             status=" · ".join(parts))


def train(  # noqa: PLR0917 - typer maps each option to a parameter
    name: Annotated[str, typer.Argument(help="Name the model is logged under (DNS-1123 label).")],
    base_model: Annotated[str, typer.Option(help="huggingface://org/name, file://, s3:// or store://project/model/x")],
    dataset: Annotated[str | None, typer.Option(help="file:// or s3:// CSV/JSONL/Parquet, or hf://org/name.")] = None,
    task: Annotated[str, typer.Option(help="sequence_classification, token_classification or text_generation.")]
    = "sequence_classification",
    text_column: Annotated[str, typer.Option(help="Column with the text (or words, for tokens).")] = "text",
    label_column: Annotated[str, typer.Option(help="Column with the labels (tags, for tokens).")] = "label",
    labels: Annotated[str | None, typer.Option(help="Comma-separated class names, in id order.")] = None,
    max_samples: Annotated[int | None, typer.Option(min=1, help="Use at most this many rows.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Batch size.")] = None,
    max_length: Annotated[int | None, typer.Option(min=8, help="Longest tokenized input.")] = None,
    hyperparameters: Annotated[str | None, typer.Option(help="More hyper-parameters as JSON or @file.")] = None,
    code: Annotated[str | None, typer.Option(help="Python file (or file://, s3:// URI) with train(context).")]
    = None,
    handler: Annotated[str, typer.Option(help="The handler function in --code.")] = "train",
    requirement: Annotated[
        list[str] | None, typer.Option("--requirement", "-r", help="pip requirement of --code (repeatable).")
    ] = None,
    parameters: Annotated[str | None, typer.Option(help="context.parameters of --code, JSON or @file.")] = None,
    profile: Annotated[str | None, typer.Option(help="Resource profile, e.g. 1xa100 (settings' default).")] = None,
    project: Annotated[str, typer.Option(help="Project the model belongs to.")] = "default",
    env: Annotated[list[str] | None, typer.Option("--env", help="K=V environment variable (repeatable).")] = None,
    secret_ref: Annotated[
        list[str] | None, typer.Option("--secret-ref", help="ENV=secret:key, e.g. HF_TOKEN=hf-token:token.")
    ] = None,
    job_timeout: Annotated[float | None, typer.Option(help="Longest the job may run, seconds.")] = None,
    deploy_service: Annotated[str | None, typer.Option(help="Serve the logged model as this service.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for ModelLogged, showing progress.")] = False,
    timeout: Annotated[float, typer.Option(help="How long --wait waits, seconds.")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ModelLogged event data as JSON.")] = False,
) -> None:
    """Fine-tune a model and log it to the registry (publishes TrainRequested)."""
    hp: dict[str, Any] = dict(load_json_arg(hyperparameters)) if hyperparameters else {}
    for key, value in (("epochs", epochs), ("learning_rate", lr), ("batch_size", batch_size),
                       ("max_length", max_length)):
        if value is not None:
            hp[key] = value
    fields: dict[str, Any] = {"task": task, "project": project, "hyperparameters": hp,
                              "envs": [{"name": k, "value": v} for k, v in _pairs(env or [], "--env")],
                              "secret_refs": _secret_refs(secret_ref or [])}
    if dataset is not None:
        spec: dict[str, Any] = {"uri": dataset, "text_column": text_column, "label_column": label_column}
        if max_samples is not None:
            spec["max_samples"] = max_samples
        fields["dataset"] = spec
    optional = (("labels", [x.strip() for x in labels.split(",")] if labels else None), ("profile", profile),
                ("timeout_s", job_timeout), ("code", _code(code, handler, requirement or [], parameters)),
                ("deploy", {"service": deploy_service} if deploy_service else None))
    fields.update({key: value for key, value in optional if value is not None})

    with user_errors(), ModelBus(settings()) as bus:
        display = _Display(name) if wait and not as_json else None
        try:
            if display is not None:
                with display.progress:
                    outcome = bus.train(name, base_model=base_model, wait=True, timeout=timeout,
                                        on_progress=display, **fields)
            else:
                outcome = bus.train(name, base_model=base_model, wait=wait, timeout=timeout, **fields)
        except RequestFailed as exc:
            tail = getattr(exc.event.data, "log_tail", None)
            if tail:
                err_console.print(f"[dim]{escape(tail[-3000:])}[/]", highlight=False, soft_wrap=True)
            fail(f"training failed: {exc.reason}: {exc.event.data.message}")
    if not isinstance(outcome, LoggedModel):
        console.print(f"requested training of {name} (event {outcome.id})", soft_wrap=True)
        return
    if as_json:
        console.print_json(outcome.data.model_dump_json(exclude_none=True))
        return
    console.print(f"[bold green]logged[/] {outcome.store_uri}", soft_wrap=True)
    console.print(f"  path: {outcome.path}", soft_wrap=True, highlight=False)
    for key, value in sorted(outcome.metrics.items()):
        console.print(f"  {key}: {value:.4f}", soft_wrap=True, highlight=False)
    if deploy_service:
        console.print(f"  deploying as {deploy_service} (modelbus services list)", soft_wrap=True)


@models_app.command("list")
def models_list(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    name: Annotated[str | None, typer.Option(help="Only versions of this model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array of versions.")] = False,
) -> None:
    """Show logged model versions, newest first: task, key metrics, created, store:// reference."""
    from workers.models_registry import ModelRegistry

    versions = ModelRegistry.from_settings(settings()).versions(project=project, name=name)
    if as_json:
        typer.echo(json.dumps([v.to_dict() for v in versions], indent=2))
        return
    table = Table("task", "eval_accuracy", "eval_loss", "created")
    table.add_column("reference", no_wrap=True)  # what `deploy --path` and `models show` take
    for v in versions:
        metric = {k: f"{v.metrics[k]:.4f}" for k in ("eval_accuracy", "eval_loss") if k in v.metrics}
        table.add_row(v.task or "", metric.get("eval_accuracy", ""), metric.get("eval_loss", ""),
                      v.created.strftime("%Y-%m-%d %H:%M"), v.store_uri)
    console.print(table)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="store://project/model/name[:version], or name[:version].")],
    project: Annotated[str, typer.Option(help="Project, when REF is a bare name.")] = "default",
) -> None:
    """Print one version (the latest when no version is given) as JSON: path, metrics, labels, producer."""
    from workers.models_registry import ModelRegistry, UnknownModel

    uri = ref if ref.startswith("store://") else f"store://{project}/model/{ref}"
    with user_errors():
        try:
            version = ModelRegistry.from_settings(settings()).lookup(uri)
        except UnknownModel as exc:
            fail(str(exc))
    typer.echo(json.dumps(version.to_dict(), indent=2))
