"""The artefact store: where fine-tuned models (and the files training reads) live, `file://` or `s3://`.

Layout: `<root>/<project>/model/<name>/<version>/`, as the platform's `log_model` lays out its default
files store. The root is `settings.artifact_root` (a local directory under the state dir by default,
or an `s3://bucket/prefix` with `settings.storage.s3_endpoint_url` for MinIO and friends).

Writes are whole-folder: `put_tree` makes a finished local folder visible at once (an atomic rename on
a file root; on S3, objects are uploaded with a caller-chosen file last, and the model registry only
records a version after `put_tree` returned). Reads (`fetch`) serve both the worker and the training
job, which also loads `file://`/`s3://` datasets and user code through this module. boto3 errors stop
here and become `ArtifactError`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from schemas.settings import Settings


class ArtifactError(Exception):
    """The store could not be read or written (bad URI, unreachable endpoint, denied)."""


class ArtifactNotFound(ArtifactError):
    """Nothing exists at the URI."""


@dataclass(frozen=True)
class _S3Location:
    bucket: str
    key: str


def _parse(uri: str) -> Path | _S3Location:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ArtifactError(f"{uri}: file URIs must be local (file:///abs/path)")
        return Path(unquote(parts.path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ArtifactError(f"{uri}: expected s3://bucket/key")
        return _S3Location(parts.netloc, parts.path.lstrip("/"))
    raise ArtifactError(f"{uri}: only file:// and s3:// locations are supported")


def join(root: str, *parts: str) -> str:
    """Join path segments onto a store URI; a trailing `/` is kept when the last part ends with one."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)]) + ("/" if parts and parts[-1].endswith("/")
                                                                          else "")


class ArtifactStore:
    """Reads and writes folders and files at `file://` and `s3://` URIs.

    Args:
        root: where model versions go, `file:///abs/dir` or `s3://bucket/prefix`.
        s3_endpoint_url: S3-compatible endpoint (None: AWS). Credentials come from the usual boto3
            sources (env `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, IRSA).
        s3_region: region of the S3 client.

    Example:
        >>> store = ArtifactStore("file:///tmp/artifacts")
        >>> store.version_uri("default", "sentiment", "0b9c")
        'file:///tmp/artifacts/default/model/sentiment/0b9c/'
    """

    def __init__(self, root: str, *, s3_endpoint_url: str | None = None, s3_region: str = "us-east-1") -> None:
        _parse(root)
        self.root = root.rstrip("/")
        self.s3_endpoint_url = s3_endpoint_url
        self.s3_region = s3_region
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        return cls(settings.artifact_root, s3_endpoint_url=settings.storage.s3_endpoint_url,
                   s3_region=settings.storage.s3_region)

    def version_uri(self, project: str, name: str, version: str) -> str:
        """The folder URI of one model version (with a trailing `/`)."""
        return join(self.root, project, "model", name, f"{version}/")

    # -- writes ---------------------------------------------------------------------------------------
    def put_tree(self, src: Path, uri: str, *, last: Iterable[str] = ()) -> None:
        """Make the local folder `src` the content of `uri`, replacing what was there.

        On a file root the folder is moved next to its destination and renamed into place, so readers see
        the old content or the new, never half of it. On S3 the files named in `last` are uploaded after
        all others, so a reader waiting for them sees a complete folder.
        """
        where = _parse(uri)
        if isinstance(where, Path):
            _put_local(src, where)
        else:
            self._put_s3(src, where, last=set(last))

    def delete_tree(self, uri: str) -> None:
        """Remove a folder (no error when it does not exist)."""
        where = _parse(uri)
        if isinstance(where, Path):
            shutil.rmtree(where, ignore_errors=True)
            return
        for key in self._s3_keys(where):
            self._s3_call("delete_object", Bucket=where.bucket, Key=key)

    # -- reads ----------------------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        where = _parse(uri)
        if isinstance(where, Path):
            return where.exists()
        return bool(self._s3_keys(where, limit=1))

    def read_text(self, uri: str) -> str:
        """The content of one file (UTF-8).

        Raises:
            ArtifactNotFound: no such file.
        """
        where = _parse(uri)
        if isinstance(where, Path):
            try:
                return where.read_text()
            except FileNotFoundError as exc:
                raise ArtifactNotFound(f"{uri} does not exist") from exc
            except OSError as exc:
                raise ArtifactError(f"cannot read {uri}: {exc.strerror}") from exc
        body = self._s3_call("get_object", Bucket=where.bucket, Key=where.key)["Body"]
        return str(body.read().decode())

    def fetch(self, uri: str, dest: Path) -> Path:
        """A local path holding the file or folder at `uri`.

        A `file://` URI is returned as its own path (no copy). An S3 object is downloaded to
        `dest/<basename>`, an S3 prefix (a folder) to `dest/<last segment>/...`.

        Raises:
            ArtifactNotFound: nothing is at `uri`.
        """
        where = _parse(uri)
        if isinstance(where, Path):
            if not where.exists():
                raise ArtifactNotFound(f"{uri} does not exist")
            return where
        key = where.key.rstrip("/")
        exact = [k for k in self._s3_keys(_S3Location(where.bucket, key), limit=1) if k == key]
        if exact and not where.key.endswith("/"):
            target = dest / Path(key).name
            target.parent.mkdir(parents=True, exist_ok=True)
            self._s3_call("download_file", where.bucket, key, str(target))
            return target
        prefix = f"{key}/" if key else ""
        keys = self._s3_keys(_S3Location(where.bucket, prefix))
        if not keys:
            raise ArtifactNotFound(f"{uri} does not exist")
        folder = dest / (Path(key).name or where.bucket)
        for k in keys:
            target = folder / k[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            self._s3_call("download_file", where.bucket, k, str(target))
        return folder

    # -- s3 -------------------------------------------------------------------------------------------
    @property
    def _s3(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.s3_endpoint_url, region_name=self.s3_region)
        return self._client

    def _s3_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._s3, method)(*args, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NoSuchBucket", "NotFound"):
                raise ArtifactNotFound(f"s3 {method}: {code}: {args or kwargs}") from exc
            raise ArtifactError(f"s3 {method} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise ArtifactError(f"s3 {method} failed: {exc}") from exc

    def _s3_keys(self, where: _S3Location, *, limit: int | None = None) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": where.bucket, "Prefix": where.key}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._s3_call("list_objects_v2", **kwargs)
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
            if (limit and len(keys) >= limit) or not page.get("IsTruncated"):
                return keys
            token = page.get("NextContinuationToken")

    def _put_s3(self, src: Path, where: _S3Location, *, last: set[str]) -> None:
        prefix = where.key.rstrip("/") + "/"
        for key in self._s3_keys(_S3Location(where.bucket, prefix)):
            self._s3_call("delete_object", Bucket=where.bucket, Key=key)
        files = sorted((p for p in src.rglob("*") if p.is_file()), key=lambda p: (p.name in last, str(p)))
        for path in files:
            self._s3_call("upload_file", str(path), where.bucket, prefix + path.relative_to(src).as_posix())


def _put_local(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    shutil.copytree(src, staging)
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    if dest.exists():
        os.rename(dest, old)
    os.rename(staging, dest)
    shutil.rmtree(old, ignore_errors=True)
