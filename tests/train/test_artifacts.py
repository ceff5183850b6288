"""The artefact store: folders become visible whole, at the documented layout, on disk and on S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.conftest import S3
from workers.artifacts import ArtifactNotFound, ArtifactStore


def model_folder(root: Path, marker: str) -> Path:
    folder = root / "src"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text(f'{{"marker": "{marker}"}}')
    (folder / "sub" / "weights.bin").write_bytes(b"\x00" * 1024)
    return folder


def test_a_version_lands_at_project_model_name_version_under_a_file_root(tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "artifacts").as_uri())
    uri = store.version_uri("default", "sentiment", "0b9c")

    store.put_tree(model_folder(tmp_path, "one"), uri)

    assert uri == (tmp_path / "artifacts").as_uri() + "/default/model/sentiment/0b9c/"
    placed = tmp_path / "artifacts" / "default" / "model" / "sentiment" / "0b9c"
    assert sorted(p.relative_to(placed).as_posix() for p in placed.rglob("*")) == [
        "config.json", "sub", "sub/weights.bin"]
    assert store.read_text(uri + "config.json") == '{"marker": "one"}'
    assert store.fetch(uri, tmp_path / "unused") == placed
    # nothing but the version folder is left next to it (no staging leftovers)
    assert [p.name for p in placed.parent.iterdir()] == ["0b9c"]


def test_putting_a_folder_again_replaces_it_and_delete_removes_it(tmp_path: Path) -> None:
    store = ArtifactStore((tmp_path / "artifacts").as_uri())
    uri = store.version_uri("default", "sentiment", "0b9c")
    store.put_tree(model_folder(tmp_path / "a", "one"), uri)

    store.put_tree(model_folder(tmp_path / "b", "two"), uri)
    assert store.read_text(uri + "config.json") == '{"marker": "two"}'

    store.delete_tree(uri)
    assert not store.exists(uri)
    with pytest.raises(ArtifactNotFound):
        store.read_text(uri + "config.json")
    store.delete_tree(uri)  # deleting nothing is fine


def test_an_s3_root_stores_uploads_fetches_and_deletes_versions(tmp_path: Path, s3: S3) -> None:
    store = ArtifactStore(f"s3://{s3.bucket}/team-a", s3_endpoint_url=s3.endpoint_url)
    uri = store.version_uri("default", "sentiment", "0b9c")

    store.put_tree(model_folder(tmp_path, "one"), uri)

    assert uri == f"s3://{s3.bucket}/team-a/default/model/sentiment/0b9c/"
    keys = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket)["Contents"])
    assert keys == ["team-a/default/model/sentiment/0b9c/config.json",
                    "team-a/default/model/sentiment/0b9c/sub/weights.bin"]
    assert store.read_text(uri + "config.json") == '{"marker": "one"}'

    local = store.fetch(uri, tmp_path / "download")
    assert (local / "sub" / "weights.bin").read_bytes() == b"\x00" * 1024
    single = store.fetch(uri + "config.json", tmp_path / "one-file")
    assert single.read_text() == '{"marker": "one"}'

    store.delete_tree(uri)
    assert not store.exists(uri)
    with pytest.raises(ArtifactNotFound):
        store.fetch(uri, tmp_path / "again")
