"""Validate built manifests the way the API server would: the KServe CRD schema, Kubernetes' OpenAPI.

The CRD schema (KServe v1beta1 `InferenceService`, kserve/kserve config/crd/full at aaac4e294dae,
descriptions removed) is vendored next to this file. Kubernetes silently prunes fields a structural
schema does not declare, so a misspelt field would vanish without an error; the validator here is
stricter and rejects undeclared fields, which is what a test wants to see.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

CRD_SCHEMA = Path(__file__).parent / "crds" / "inferenceservice-v1beta1.schema.json.gz"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _close(schema: Any) -> Any:
    """Add `additionalProperties: false` wherever a schema lists properties and allows nothing else."""
    if isinstance(schema, dict):
        schema = {key: _close(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_close(item) for item in schema]
    return schema


@cache
def _isvc_validator() -> jsonschema.Draft7Validator:
    with gzip.open(CRD_SCHEMA, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    schema = _close(copy.deepcopy(doc["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def validate_metadata(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    assert len(meta["name"]) <= 63, meta["name"]
    assert _DNS_LABEL.match(meta["name"]), meta["name"]
    for key, value in meta.get("labels", {}).items():
        assert len(value) <= 63, f"label {key}={value!r} is too long"
        assert _LABEL_VALUE.match(value), f"label {key}={value!r} is not a valid value"
    for value in meta.get("annotations", {}).values():
        assert isinstance(value, str)


def validate(obj: dict[str, Any]) -> None:
    """Raise if `obj` would be rejected (or silently pruned) by the API server."""
    validate_metadata(obj)
    if obj["kind"] == "InferenceService":
        errors = sorted(_isvc_validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            raise AssertionError("; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors))
    else:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
