"""Model sources: turn ``--model_id``/``--model_dir`` into a local directory ``from_pretrained`` can read.

Accepted forms (the ones modelbus events carry, see schemas' ``ModelURI``):

* a local directory, or ``file:///abs/path``;
* ``s3://bucket/prefix/``: every object under the prefix is downloaded with boto3 into the cache
  directory (files already there with the same size are kept), endpoint configurable for
  S3-compatible stores;
* ``huggingface://org/name[:revision]``, ``hf://org/name[:revision]`` or a bare ``org/name``:
  resolved through the local Hugging Face cache with ``huggingface_hub.snapshot_download``,
  which honours ``HF_TOKEN`` and ``HF_HUB_OFFLINE``.

Every failure becomes ``ModelLoadError`` with a message that names the source (never the token).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from serving.config import StorageOptions
from serving.errors import ModelLoadError

_HF_SCHEMES = ("huggingface://", "hf://")
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ResolvedModel:
    """A model source made local. ``revision`` is only meaningful for Hugging Face sources."""

    path: Path
    source: str


def resolve_model(source: str, *, storage: StorageOptions, revision: str | None = None) -> ResolvedModel:
    """Make ``source`` available as a local directory.

    Args:
        source: a path, ``file://``, ``s3://``, ``hf://``/``huggingface://`` URI or ``org/name`` id.
        storage: cache directory, S3 endpoint and credentials, HF token.
        revision: ``--model_revision``; a ``:revision`` in the URI takes precedence.

    Returns:
        The local directory and the source it came from.

    Raises:
        ModelLoadError: the source does not exist, cannot be downloaded, or is not a model directory.

    Example:
        >>> resolve_model("file:///models/sst2", storage=StorageOptions.from_env())  # doctest: +SKIP
        ResolvedModel(path=PosixPath('/models/sst2'), source='file:///models/sst2')
    """
    if source.startswith("file://"):
        return ResolvedModel(_local_dir(Path(unquote(urlparse(source).path)), source), source)
    if source.startswith("s3://"):
        return ResolvedModel(_download_s3(source, storage), source)
    for scheme in _HF_SCHEMES:
        if source.startswith(scheme):
            repo_id, _, uri_revision = source[len(scheme):].partition(":")
            return ResolvedModel(_hf_snapshot(repo_id, uri_revision or revision, storage), source)
    local = Path(source).expanduser()
    if local.exists() or source.startswith(("/", ".")):
        return ResolvedModel(_local_dir(local, source), source)
    if _HF_REPO_ID.match(source):
        return ResolvedModel(_hf_snapshot(source, revision, storage), source)
    raise ModelLoadError(f"cannot load model from {source!r}: not a directory, file://, s3:// or hf:// source")


def _local_dir(path: Path, source: str) -> Path:
    if not path.is_dir():
        raise ModelLoadError(f"cannot load model from {source}: directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"cannot load model from {source}: {path} has no config.json")
    return path


def _download_s3(uri: str, storage: StorageOptions) -> Path:
    """Download every object under ``s3://bucket/prefix`` into the cache, keeping the layout."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise ModelLoadError(f"cannot load model from {uri}: no bucket in the URI")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    target = storage.cache_dir / "s3" / bucket / prefix
    client = boto3.client(
        "s3",
        endpoint_url=storage.s3_endpoint_url,
        region_name=storage.s3_region,
    )
    count = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key: str = obj["Key"]
                relative = key[len(prefix):]
                if not relative or relative.endswith("/"):
                    continue
                destination = target / relative
                if not destination.resolve().is_relative_to(target.resolve()):
                    raise ModelLoadError(f"cannot load model from {uri}: object key {key!r} escapes the prefix")
                count += 1
                if destination.is_file() and destination.stat().st_size == obj["Size"]:
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                partial = destination.with_name(destination.name + ".partial")
                client.download_file(bucket, key, str(partial))
                partial.replace(destination)
    except (BotoCoreError, ClientError) as exc:
        raise ModelLoadError(f"cannot download model from {uri}: {exc}") from exc
    if count == 0:
        raise ModelLoadError(f"cannot load model from {uri}: no objects under that prefix")
    return _local_dir(target, uri)


def _hf_snapshot(repo_id: str, revision: str | None, storage: StorageOptions) -> Path:
    """Resolve a Hub repository through the local Hugging Face cache (downloading if allowed)."""
    if repo_id.count("/") > 1 or not _HF_REPO_ID.match(repo_id):
        raise ModelLoadError(
            f"invalid Hugging Face model id {repo_id!r}: expected 'org/name' or 'hf://org/name[:revision]'"
        )
    from huggingface_hub import snapshot_download

    where = f"{repo_id}" + (f" (revision {revision})" if revision else "")
    try:
        path = snapshot_download(repo_id=repo_id, revision=revision, token=storage.hf_token or None)
    except Exception as exc:
        # huggingface_hub raises a zoo of errors (offline, gated, missing, network); all mean
        # the same thing here: this model cannot be served. The token never appears in them.
        raise ModelLoadError(
            f"cannot load Hugging Face model {where}: {type(exc).__name__}: {exc}"
        ) from exc
    return _local_dir(Path(path), f"hf://{repo_id}")
