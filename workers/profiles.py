"""Resource profiles: a short name (`1xa100`) standing for requests, limits, GPUs and placement.

Operators define profiles in one YAML file (the packaged `workers/profiles.yaml` unless
`settings.profiles_file` names another, e.g. the ConfigMap mounted from `deploy/profiles.yaml`).
Users only pass the name. Unlike the platform this mirrors, an unknown name is an error
(`UnknownProfile`, listing the valid names) and never silently falls back to a default.

The GPU count is one field that lands in both requests and limits, so "GPU limits == requests"
holds by construction rather than by review.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from workers.errors import PermanentError

PACKAGED_PROFILES = "profiles.yaml"

#: A Kubernetes quantity such as `500m`, `8`, `64Gi`.
Quantity = Annotated[
    str,
    StringConstraints(pattern=r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$"),
]
ProfileName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.\-]*$", max_length=63)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Toleration(_Strict):
    """A pod toleration, written in YAML with Kubernetes' own (camelCase) field names."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")

    def manifest(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class Profile(_Strict):
    """One resource profile.

    Example:
        >>> load_profiles().get("1xa100").resources()["limits"]["nvidia.com/gpu"]
        '1'
    """

    name: ProfileName
    description: str = ""
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)
    gpu: Annotated[int, Field(ge=0, le=64)] = 0
    gpu_resource: str = Field(default="nvidia.com/gpu", description="Extended resource name of the GPU.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    runtime_class: str | None = Field(default=None, description="Pod runtimeClassName (e.g. nvidia).")
    priority_class: str | None = Field(default=None, description="Pod priorityClassName.")
    runtime: str | None = Field(default=None, description="KServe ServingRuntime to pin (predictor.model.runtime).")

    @model_validator(mode="after")
    def _gpu_only_through_count(self) -> Profile:
        for section in (self.requests, self.limits):
            if self.gpu_resource in section:
                raise ValueError(
                    f"profile {self.name!r}: set GPUs with `gpu: N`, not {self.gpu_resource} in requests/limits"
                )
        return self

    def resources(self) -> dict[str, dict[str, str]]:
        """Container `resources`: requests and limits, with the GPU count in both."""
        requests = dict(self.requests)
        limits = dict(self.limits)
        if self.gpu:
            requests[self.gpu_resource] = limits[self.gpu_resource] = str(self.gpu)
        return {"requests": requests, "limits": limits}

    def cpu_threads(self, available: int) -> int:
        """Threads a local process may use: the CPU limit (or request), at most what the machine has."""
        quantity = self.limits.get("cpu") or self.requests.get("cpu")
        wanted = math.ceil(parse_cpu(quantity)) if quantity else available
        return max(1, min(wanted, available))


def parse_cpu(quantity: str) -> float:
    """`500m` -> 0.5, `2` -> 2.0."""
    if quantity.endswith("m"):
        return float(quantity[:-1]) / 1000
    return float(quantity)


class Profiles(Mapping[str, Profile]):
    """The loaded profiles, by name."""

    def __init__(self, profiles: Mapping[str, Profile], source: str) -> None:
        self._profiles = dict(profiles)
        self.source = source

    def __getitem__(self, name: str) -> Profile:
        return self._profiles[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._profiles)

    def __len__(self) -> int:
        return len(self._profiles)

    @property
    def names(self) -> list[str]:
        return sorted(self._profiles)

    def get_or_fail(self, name: str) -> Profile:
        """The named profile.

        Raises:
            PermanentError: reason `UnknownProfile`, with the valid names in the message and details.
        """
        try:
            return self._profiles[name]
        except KeyError:
            valid = self.names
            raise PermanentError(
                f"unknown profile {name!r}; valid profiles: {', '.join(valid)}",
                reason="UnknownProfile",
                details={"profile": name, "valid_profiles": valid},
            ) from None


class ProfilesFileError(ValueError):
    """The profiles file is missing or invalid (a deployment error, reported at worker start)."""


def parse_profiles(text: str, source: str) -> Profiles:
    """Parse the YAML text of a profiles file (`profiles: {name: {...}}`)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfilesFileError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("profiles"), dict):
        raise ProfilesFileError(f"{source}: expected a mapping `profiles: {{name: {{...}}}}`")
    profiles: dict[str, Profile] = {}
    for name, body in doc["profiles"].items():
        try:
            profiles[str(name)] = Profile.model_validate({"name": str(name), **(body or {})})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ProfilesFileError(f"{source}: profile {name!r}: {problems}") from exc
    if not profiles:
        raise ProfilesFileError(f"{source}: no profiles defined")
    return Profiles(profiles, source)


def packaged_profiles_text() -> str:
    """The default profiles shipped inside the `workers` package."""
    return resources.files("workers").joinpath(PACKAGED_PROFILES).read_text(encoding="utf-8")


@cache
def _load(path: Path | None, mtime: float | None) -> Profiles:
    if path is None:
        return parse_profiles(packaged_profiles_text(), f"workers/{PACKAGED_PROFILES}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfilesFileError(f"cannot read profiles file {path}: {exc.strerror}") from exc
    return parse_profiles(text, str(path))


def load_profiles(path: Path | None = None) -> Profiles:
    """Load profiles from `path` (re-read when the file changes) or the packaged default.

    Raises:
        ProfilesFileError: the file is unreadable or invalid.
    """
    mtime = None
    if path is not None:
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise ProfilesFileError(f"cannot read profiles file {path}: {exc.strerror}") from exc
    return _load(path, mtime)

