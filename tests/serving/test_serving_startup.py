"""Starting the server: model sources (Hugging Face cache, S3) and load failures that exit before listening."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from tests.models import minilm_dir
from tests.serving_process import REPO_ROOT, free_port, running_server

SECRET_TOKEN = "hf_modelbus_test_secret_token_value"  # a fake token that must never be printed


def _fail_cases(classifier: Path) -> dict[str, tuple[list[str], str]]:
    return {
        "missing directory": (["--model_dir", "/nonexistent/modelbus/model"], "does not exist"),
        "uncached Hugging Face id offline": (["--model_id", "modelbus-test/not-cached", "--model_revision", "v1"],
                                             "cannot load Hugging Face model modelbus-test/not-cached (revision v1)"),
        "encoder without head and no --task": (["--model_dir", str(minilm_dir())],
                                               "Task couldn't be inferred from BertModel"),
        "unsupported task": (["--model_dir", str(classifier), "--task", "question_answering"],
                             "Task question_answering is not supported"),
        "vllm backend": (["--model_dir", str(classifier), "--backend", "vllm"], "vllm backend is not available"),
    }


@pytest.fixture(scope="module")
def failed_starts(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Every failing configuration started at once; (exit code, output) per case."""
    hf_home = tmp_path_factory.mktemp("empty-hf-home")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "HF_TOKEN": SECRET_TOKEN, "PYTHONPATH": str(REPO_ROOT)}
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "serving", "--model_name", "m", *args, "--http_port", str(free_port()),
             "--host", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(REPO_ROOT),
            env={**os.environ, **env},
        )
        for name, (args, _) in _fail_cases(model_dirs["classifier"]).items()
    }
    return {name: (p.wait(timeout=120), p.communicate()[0]) for name, p in processes.items()}


@pytest.mark.parametrize("case", list(_fail_cases(Path("classifier"))))
def test_unloadable_model_exits_non_zero_before_listening(failed_starts, model_dirs, case) -> None:
    code, output = failed_starts[case]
    expected = _fail_cases(model_dirs["classifier"])[case][1]
    assert code == 1, output
    assert "error: cannot serve model 'm':" in output
    assert expected in output
    assert "Uvicorn running" not in output
    assert "Traceback" not in output
    assert SECRET_TOKEN not in output


def _hf_cache_with(model: Path, hf_home: Path, repo_id: str) -> None:
    """Lay ``model`` out as a Hugging Face cache entry, the way snapshot_download leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_serves_a_model_from_the_local_hugging_face_cache(model_dirs, tmp_path) -> None:
    # Given a Hub model already in the local cache, and no network access
    _hf_cache_with(model_dirs["classifier"], tmp_path / "hf", "modelbus-test/tiny-classifier")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": SECRET_TOKEN}

    # When the server is started with a huggingface:// URI naming a revision
    uri = "huggingface://modelbus-test/tiny-classifier:main"
    with running_server(["--model_name", "hub", "--model_id", uri], env=env) as url:
        # Then it serves that model
        response = httpx.post(f"{url}/v1/models/hub:predict", json={"instances": ["Hello, my dog is cute"]})
        assert response.status_code == 200
        assert response.json()["predictions"][0] in (0, 1, 2)


@pytest.fixture
def s3_model(model_dirs: dict[str, Path]) -> Iterator[tuple[str, dict[str, str]]]:
    """The tiny classifier uploaded to a moto S3 server; yields its URI and the env to reach it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "MODELBUS_STORAGE__S3_ENDPOINT_URL": f"http://{host}:{port}"}
    try:
        client = boto3.client("s3", endpoint_url=env["MODELBUS_STORAGE__S3_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket="datalake")
        prefix = "llm/model/test_cls_model/5a1c/"
        source = model_dirs["classifier"]
        for path in source.rglob("*"):
            if path.is_file():
                client.upload_file(str(path), "datalake", prefix + path.relative_to(source).as_posix())
        yield f"s3://datalake/{prefix}", env
    finally:
        server.stop()


def test_serves_a_model_downloaded_from_s3(s3_model, tmp_path) -> None:
    uri, env = s3_model
    env = {**env, "MODELBUS_STATE_DIR": str(tmp_path / "state")}
    with running_server(["--model_name", "s3cls", "--model_id", uri], env=env) as url:
        body = httpx.post(f"{url}/v2/models/s3cls/infer", json={
            "inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}).json()
        assert body["outputs"][0]["datatype"] == "INT64"
    cached = tmp_path / "state" / "model-cache" / "s3" / "datalake" / "llm" / "model" / "test_cls_model" / "5a1c"
    assert (cached / "config.json").is_file()
    assert (cached / "model.safetensors").is_file()
