"""The root `modelbus` Typer application; each area registers its commands here."""

from __future__ import annotations

import typer

from producers.cli import batch, contract, demo, deploy, invoke, ops, serve, train, worker

app = typer.Typer(
    name="modelbus",
    help="Hugging Face models on Kubernetes through events.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("publish")(contract.publish)
app.add_typer(contract.schema_app, name="schema")
app.add_typer(contract.topology_app, name="topology")
app.command("worker")(worker.worker)
app.command("deploy")(deploy.deploy)
app.command("undeploy")(deploy.undeploy)
app.add_typer(deploy.services_app, name="services")
app.command("status")(ops.status)
app.add_typer(ops.dlq_app, name="dlq")
app.command("demo")(demo.demo)
app.command("invoke")(invoke.invoke)
app.add_typer(batch.batch_app, name="batch")
app.command("train")(train.train)
app.add_typer(train.models_app, name="models")
app.command(
    "serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
)(serve.serve)


def main() -> None:
    app()
