"""Tiny models and running servers for the serving tests, built and started once per session.

All servers start together (model loading overlaps) and are stopped at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.models import (
    build_tiny_classifier,
    build_tiny_fill_mask,
    build_tiny_generator,
    build_tiny_seq2seq,
    build_tiny_token_classifier,
    minilm_dir,
)
from tests.serving_process import ServerProcess, start_server


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serving-models")
    return {
        "classifier": build_tiny_classifier(root / "classifier", num_labels=3),
        "token_classifier": build_tiny_token_classifier(root / "token-classifier", num_labels=5),
        "fill_mask": build_tiny_fill_mask(root / "fill-mask"),
        "generator": build_tiny_generator(root / "generator"),
        "seq2seq": build_tiny_seq2seq(root / "seq2seq"),
        "minilm": minilm_dir(),
    }


def _server_args(dirs: dict[str, Path]) -> dict[str, list[str]]:
    return {
        "cls": ["--model_name", "cls", "--model_dir", str(dirs["classifier"]), "--max_batch_wait_ms", "20"],
        # The platform passes booleans as "--flag true|false" pairs and sources as file:// URIs.
        "cls-probs": ["--model_name", "cls-probs", "--model_id", dirs["classifier"].as_uri(),
                      "--return_probabilities", "true", "--disable_lower_case", "false"],
        "cls-logits": ["--model_name", "cls-logits", "--model_dir", str(dirs["classifier"]),
                       "--return_raw_logits"],
        "ner": ["--model_name", "ner", "--model_dir", str(dirs["token_classifier"]), "--max_batch_wait_ms", "50"],
        "fill": ["--model_name", "fill", "--model_dir", str(dirs["fill_mask"])],
        "embed": ["--model_name", "embed", "--model_dir", str(dirs["minilm"]), "--task", "text_embedding"],
        "gpt": ["--model_name", "gpt", "--model_dir", str(dirs["generator"]), "--max_batch_wait_ms", "30"],
        "t5": ["--model_name", "t5", "--model_dir", str(dirs["seq2seq"])],
    }


@pytest.fixture(scope="session")
def servers(model_dirs: dict[str, Path]) -> Iterator[dict[str, str]]:
    """Base URL per served model name; every server is a real ``python -m serving`` process."""
    processes: dict[str, ServerProcess] = {}
    try:
        for name, args in _server_args(model_dirs).items():
            processes[name] = start_server(args)
        yield {name: process.wait_ready() for name, process in processes.items()}
    finally:
        for process in processes.values():
            process.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client
