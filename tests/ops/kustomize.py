"""Render deploy/ with kustomize and validate what comes out, as the API server (and KEDA) would.

Built-in kinds are checked strictly (unknown fields rejected) against the Kubernetes OpenAPI schemas
of `kubernetes-validate`; KEDA and RabbitMQ-operator objects against the closed CRD subsets in
tests/ops/schemas/ (written from their reference docs).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from pydantic import BaseModel

from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES_VERSION = "1.37.0"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.schema.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.schema.json",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmqcluster.schema.json",
}
TARGETS = ("base", "overlays/dev", "overlays/production")


@cache
def kustomize_command() -> list[str] | None:
    """`kubectl kustomize` (kustomize v4+) or a standalone `kustomize build`, whichever works here."""
    if shutil.which("kubectl"):
        done = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True,
                              timeout=30, check=False)
        try:
            version = json.loads(done.stdout).get("kustomizeVersion", "")
        except ValueError:
            version = ""
        if re.match(r"^v([4-9]|\d{2,})\.", version):  # older kubectl bundle kustomize v2/v3
            return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


SKIP_REASON = ("no kustomize v4+: neither `kubectl` with a bundled kustomize v4+ nor a standalone `kustomize` "
               "is installed (.ci/setup installs kubectl)")


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """The objects `deploy/<target>` renders to (raises with kustomize's message when it fails)."""
    command = kustomize_command()
    assert command is not None, "no kustomize"
    done = subprocess.run([*command, str(DEPLOY / target)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"kustomize {target} failed: {done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@cache
def _crd_validator(filename: str) -> jsonschema.Draft7Validator:
    schema = json.loads((Path(__file__).parent / "schemas" / filename).read_text())
    return jsonschema.Draft7Validator(schema)


def validate(obj: dict[str, Any]) -> None:
    """Raise AssertionError if the API server (or the CRD's schema) would reject `obj`."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_SCHEMAS:
        errors = sorted(_crd_validator(CRD_SCHEMAS[key]).iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            raise AssertionError("; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors))
        return
    try:
        kubernetes_validate.validate(copy.deepcopy(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at "
                             f"{'/'.join(map(str, exc.path))}") from exc


def objects(target: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(target) if o["kind"] == kind]


def named(target: str, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects(target, kind) if o["metadata"]["name"] == name]
    assert found, f"no {kind} {name} in {target}"
    return found[0]


def is_settings_env(name: str) -> bool:
    """Whether MODELBUS_<...> names a field of `Settings` (nested groups with `__`)."""
    if not name.startswith("MODELBUS_"):
        return False
    model: type[BaseModel] = Settings
    parts = name[len("MODELBUS_"):].lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if i < len(parts) - 1:
            annotation = field.annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True
