"""Resource profiles: what operators configure and what a bad name gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.errors import PermanentError
from workers.profiles import ProfilesFileError, load_profiles, packaged_profiles_text

REPO = Path(__file__).resolve().parents[2]


def test_every_copy_under_deploy_is_the_packaged_default() -> None:
    # The ConfigMap is generated from deploy/; workers/profiles.yaml ships in the wheel. They must agree.
    copies = sorted((REPO / "deploy").rglob("profiles.yaml"))
    assert REPO / "deploy" / "profiles.yaml" in copies
    for copy in copies:
        assert copy.read_text() == packaged_profiles_text(), f"{copy} differs from workers/profiles.yaml"


def test_the_default_profiles_are_the_platforms_names() -> None:
    assert set(load_profiles().names) == {"1xa100", "2xa100", "1xh100", "1xl4", "cpu-small", "cpu-large"}


def test_a_gpu_profile_asks_for_the_same_gpus_in_requests_and_limits() -> None:
    resources = load_profiles().get_or_fail("2xa100").resources()
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "2"


def test_an_unknown_profile_is_a_permanent_error_listing_the_valid_names() -> None:
    with pytest.raises(PermanentError) as err:
        load_profiles().get_or_fail("1xa10O")
    assert err.value.reason == "UnknownProfile"
    assert "1xa100, 1xh100, 1xl4, 2xa100, cpu-large, cpu-small" in err.value.message
    assert err.value.details["valid_profiles"] == sorted(load_profiles().names)


def test_an_operator_profiles_file_replaces_the_default_and_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles:\n  tiny:\n    requests: {cpu: 500m, memory: 1Gi}\n")
    assert load_profiles(path).names == ["tiny"]
    assert load_profiles(path).get_or_fail("tiny").cpu_threads(available=8) == 1
    path.write_text("profiles:\n  tiny:\n    requests: {cpu: '1'}\n  big:\n    limits: {cpu: '64'}\n")
    os.utime(path, (1, 1))  # a distinct mtime, as an edited ConfigMap would have
    assert load_profiles(path).names == ["big", "tiny"]
    assert load_profiles(path).get_or_fail("big").cpu_threads(available=8) == 8


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("profiles: {}", "no profiles"),
        ("profiles:\n  x:\n    requests: {cpu: lots}\n", "requests.cpu"),
        ("profiles:\n  x:\n    limits: {nvidia.com/gpu: '1'}\n", "gpu: N"),
        ("profiles:\n  x:\n    gpus: 1\n", "gpus"),
        ("- not a mapping", "expected a mapping"),
    ],
)
def test_a_broken_profiles_file_is_reported_with_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(text)
    with pytest.raises(ProfilesFileError, match=problem):
        load_profiles(path)
