"""docker-compose.yml and the Dockerfiles: they parse and reference only things that exist.

No container engine is needed: the file is read as data and every reference is checked (build
contexts, Dockerfiles and what they COPY, volumes, services, MODELBUS_* settings, worker commands,
health-check ports).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from producers.cli.main import app as cli_app
from schemas.settings import Settings
from tests.ops.kustomize import REPO, is_settings_env

COMPOSE = REPO / "docker-compose.yml"
WORKERS = {"deploy-worker": "deploy", "train-worker": "train", "invoke-worker": "invoke"}
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _interpolate(value: str) -> str:
    """What compose substitutes with no variable set: `${X:-default}` -> default."""
    return _DEFAULT.sub(lambda m: m.group(2), value)


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        words = shlex.split(line) if line.strip().startswith(("COPY", "ADD")) else []
        if words and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_the_compose_file_has_the_broker_the_three_workers_and_an_optional_s3_store():
    services = _compose()["services"]
    assert {"rabbitmq", *WORKERS} <= set(services)
    assert "management" in services["rabbitmq"]["image"]
    s3 = [name for name, svc in services.items() if "s3" in svc.get("profiles", [])]
    assert "minio" in s3
    for name in ("rabbitmq", *WORKERS):
        assert "profiles" not in services[name]


@pytest.mark.parametrize("dockerfile", sorted((REPO / "deploy" / "docker").glob("Dockerfile.*")),
                         ids=lambda p: p.name)
def test_every_file_a_dockerfile_copies_exists(dockerfile: Path):
    sources = _copy_sources(dockerfile)
    assert sources
    missing = [s for s in sources if not (REPO / s).exists()]
    assert not missing, f"{dockerfile.name} copies what the repository lacks: {missing}"


def test_builds_volumes_services_and_profiles_reference_what_exists():
    compose = _compose()
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = REPO / build["context"]
            assert context.is_dir()
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source in volumes or (REPO / source).exists(), f"{name}: volume {source}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert set(services[dependency].get("profiles", [])) <= set(service.get("profiles", [])), (
                f"{name} depends on {dependency}, which only runs with a profile")
        network = service.get("network_mode", "")
        if network.startswith("service:"):
            assert network.removeprefix("service:") in services
            assert "ports" not in service
        assert "healthcheck" in service or service.get("restart") == "no", f"{name} has no healthcheck"


@pytest.mark.parametrize("service", sorted(WORKERS))
def test_each_worker_runs_a_modelbus_worker_command_with_settings_the_code_knows(service):
    spec = _compose()["services"][service]
    # the entrypoint is `modelbus`: the command parses as `modelbus worker <name> ...`
    command = typer.main.get_command(cli_app)
    args = spec["command"]
    with command.make_context("modelbus", list(args)) as ctx:
        worker = command.get_command(ctx, args[0])
        assert worker is not None
        params = worker.make_context("worker", list(args[1:]), parent=ctx).params
    assert params["name"] == WORKERS[service]
    # the health check asks the port the worker serves /readyz on
    assert f"127.0.0.1:{params['metrics_port']}/readyz" in " ".join(spec["healthcheck"]["test"])
    # every MODELBUS_* variable is a settings field, and together they make valid settings
    env = {k: _interpolate(str(v)) for k, v in spec["environment"].items()}
    unknown = [k for k in env if k.startswith("MODELBUS_") and not is_settings_env(k)]
    assert not unknown
    settings = _settings_from(env)
    assert settings.backend == "local"
    assert settings.storage.root.startswith("file:///var/lib/modelbus/")
    assert any(v.startswith(f"state:{settings.state_dir}") for v in spec["volumes"])


def _settings_from(env: dict[str, str]) -> Settings:
    mp = pytest.MonkeyPatch()
    try:
        for key, value in env.items():
            mp.setenv(key, value)
        return Settings()
    finally:
        mp.undo()


def test_the_invoke_worker_can_reach_the_local_model_servers_of_the_deploy_worker():
    # Local servers listen on 127.0.0.1 (settings.serving.host) inside the deploy worker's container
    services = _compose()["services"]
    assert services["invoke-worker"]["network_mode"] == "service:deploy-worker"
    published = {p.split(":")[0] for p in services["deploy-worker"]["ports"]}
    assert "9103" in published  # the invoke worker's metrics port lives in that namespace
