"""Loading the labelled dataset a recipe trains on, and checking it before any model is loaded.

Sources (the `DatasetSpec.uri`):
    file:///data/reviews.csv, s3://bucket/reviews/       CSV, JSONL/JSON or Parquet (a file, or a folder of them)
    hf://org/name, huggingface://org/name, org/name        a Hugging Face Hub dataset (`datasets.load_dataset`),
                                                           with `?config=NAME&revision=REV` when needed

The result is a `Splits` (train, and eval when the recipe evaluates): sampled to `max_samples` after a
seeded shuffle, with the eval part taken from `eval_split` (a Hub split, or the URI of a separate file)
or carved off by `eval_fraction`. Problems a user can fix raise `SpecError` with a reason the worker
reports in `TrainFailed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from schemas.events import DatasetSpec
from training.errors import DATASET_NOT_FOUND, INVALID_DATASET, INVALID_HYPERPARAMETER, UNKNOWN_COLUMN, SpecError

if TYPE_CHECKING:
    from datasets import Dataset

#: Reads a file:// or s3:// URI into a local path (the artefact store's `fetch`).
Fetch = Callable[[str], Path]

_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Splits:
    train: Dataset
    eval: Dataset | None

    @property
    def columns(self) -> list[str]:
        return list(self.train.column_names)

    def tokenized(self, prepare: Callable[[dict[str, list[Any]]], dict[str, Any]]) -> tuple[Dataset, Dataset | None]:
        """Both splits through a batched `prepare`, keeping only what it returns (the raw columns go)."""

        def run(part: Dataset) -> Dataset:
            return part.map(prepare, batched=True, remove_columns=part.column_names)

        return run(self.train), (run(self.eval) if self.eval is not None else None)


def load_splits(spec: DatasetSpec, *, fetch: Fetch, need_eval: bool) -> Splits:
    """Load, sample and split a dataset.

    Raises:
        SpecError: DatasetNotFound, InvalidDataset, or InvalidHyperParameter (evaluation asked for, but
            there is nothing to evaluate on).
    """
    train = _load(spec.uri, spec, fetch=fetch, split=spec.split)
    train = _sample(train, spec)
    evaluation = None
    if spec.eval_split:
        if "://" in spec.eval_split:
            source = spec.eval_split  # a separate evaluation file (or Hub dataset)
        elif _is_hub(spec.uri):
            source = spec.uri  # another split of the same Hub dataset
        else:
            raise SpecError(INVALID_DATASET, f"eval_split {spec.eval_split!r}: for a file dataset, give the "
                            "file:// or s3:// URI of the evaluation file")
        split = spec.eval_split if source == spec.uri else "train"
        evaluation = _sample(_load(source, spec, fetch=fetch, split=split), spec)
    elif need_eval:
        if spec.eval_fraction <= 0:
            raise SpecError(INVALID_HYPERPARAMETER, "evaluation is on (eval_strategy) but the dataset has no "
                            "eval_split and eval_fraction is 0; set one, or eval_strategy 'no'")
        if len(train) < 2:
            raise SpecError(INVALID_DATASET, f"the dataset has {len(train)} row(s); it cannot be split for eval")
        parts = train.train_test_split(test_size=spec.eval_fraction, seed=spec.seed, shuffle=True)
        train, evaluation = parts["train"], parts["test"]
    if len(train) == 0:
        raise SpecError(INVALID_DATASET, f"the dataset at {spec.uri} has no rows")
    return Splits(train, evaluation)


def require_columns(splits: Splits, columns: Sequence[str | None]) -> None:
    """Raise `UnknownColumn` naming the missing column and the ones that exist."""
    for name in columns:
        if name is None:
            continue
        for part in (splits.train, splits.eval):
            if part is not None and name not in part.column_names:
                have = ", ".join(part.column_names)
                raise SpecError(UNKNOWN_COLUMN, f"dataset has no column {name!r}; its columns are: {have}")


def _is_hub(uri: str) -> bool:
    return not uri.startswith(("file://", "s3://"))


def _sample(data: Dataset, spec: DatasetSpec) -> Dataset:
    if spec.max_samples is not None and len(data) > spec.max_samples:
        return data.shuffle(seed=spec.seed).select(range(spec.max_samples))
    return data


def _load(uri: str, spec: DatasetSpec, *, fetch: Fetch, split: str) -> Dataset:
    if _is_hub(uri):
        return _load_hub(uri, split)
    try:
        local = fetch(uri)
    except FileNotFoundError as exc:
        raise SpecError(DATASET_NOT_FOUND, f"dataset {uri} does not exist") from exc
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.suffix in _EXTENSIONS) if local.is_dir() \
        else [local]
    if not files:
        raise SpecError(DATASET_NOT_FOUND, f"dataset folder {uri} holds no .csv, .jsonl, .json or .parquet file")
    return _load_files(files, spec.format, uri)


def _load_files(files: list[Path], declared: str | None, uri: str) -> Dataset:
    import pandas as pd
    from datasets import Dataset

    frames = []
    for path in files:
        fmt = declared or _EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise SpecError(INVALID_DATASET, f"cannot tell the format of {path.name}; set dataset.format "
                            "(csv, jsonl, json or parquet)")
        try:
            if fmt == "csv":
                frames.append(pd.read_csv(path))
            elif fmt in ("jsonl", "json"):
                frames.append(_read_json(path, fmt))
            else:
                frames.append(pd.read_parquet(path))
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise SpecError(INVALID_DATASET, f"cannot read {uri} as {fmt}: {exc}") from exc
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    try:
        return Dataset.from_pandas(frame, preserve_index=False)
    except (ValueError, TypeError) as exc:
        raise SpecError(INVALID_DATASET, f"cannot use {uri} as a dataset: {exc}") from exc


def _read_json(path: Path, fmt: str) -> Any:
    import pandas as pd

    if fmt == "jsonl" or path.read_text()[:1] != "[":
        return pd.read_json(path, lines=True)
    return pd.read_json(path)


def _load_hub(uri: str, split: str) -> Dataset:
    """A Hub dataset through `datasets.load_dataset`; HF_TOKEN from the environment is honoured."""
    import datasets

    parts = urlsplit(uri)
    repo = (parts.netloc + parts.path) if parts.scheme in ("hf", "huggingface") else uri.split("?", 1)[0]
    query = parse_qs(parts.query)
    config = query.get("config", [None])[0]
    revision = query.get("revision", [None])[0]
    try:
        loaded = datasets.load_dataset(repo.strip("/"), name=config, revision=revision, split=split,
                                       token=os.environ.get("HF_TOKEN"))
    except FileNotFoundError as exc:
        raise SpecError(DATASET_NOT_FOUND, f"dataset {uri} was not found on the Hub: {exc}") from exc
    except (ConnectionError, OSError) as exc:
        raise SpecError(DATASET_NOT_FOUND, f"dataset {uri} could not be downloaded: {exc}") from exc
    except ValueError as exc:
        raise SpecError(INVALID_DATASET, f"dataset {uri}: {exc}") from exc
    if not isinstance(loaded, datasets.Dataset):
        raise SpecError(INVALID_DATASET, f"dataset {uri} split {split!r} is not a single table")
    return loaded
