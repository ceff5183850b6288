"""The README's first command: the whole workflow, end to end, on the embedded defaults.

It starts the three workers as processes, deploys, invokes, fine-tunes, redeploys from the artefact
store, runs a batch, shows status and cleans up, on the real broker (this session's vhost).
"""

from __future__ import annotations

import io

import psutil
import pytest
from rich.console import Console

from producers.demo import run_demo
from schemas import InvokeCompleted, ModelLogged, ServiceDeleted, ServiceReady


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_demo_runs_the_whole_workflow_and_cleans_up(settings, tmp_path):
    out = io.StringIO()
    demo = run_demo(settings, console=Console(file=out, width=120), workdir=tmp_path)
    results = demo.results
    text = out.getvalue()

    # 1. classifier deployed and answering the seed's v2 request
    ready = results["deploy classifier"].data
    assert isinstance(ready, ServiceReady)
    assert ready.endpoints.v2_infer.endswith("/v2/models/classifier/infer")
    v2 = results["invoke classifier v2"].data
    assert isinstance(v2, InvokeCompleted)
    assert v2.body["outputs"][0]["datatype"] == "INT64"
    assert v2.body["outputs"][0]["shape"] == [2]

    # 2. generator: completions and chat, OpenAI shapes
    completion = results["invoke generator openai.completions"].data.body
    assert completion["object"] == "text_completion"
    assert completion["usage"]["completion_tokens"] > 0
    chat = results["invoke generator openai.chat"].data.body
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"]["role"] == "assistant"

    # 3. fine-tuning logged a model that learned something
    logged = results["train sentiment-ft"].data
    assert isinstance(logged, ModelLogged)
    assert logged.store_uri.startswith("store://default/model/sentiment-ft:")
    assert logged.metrics["eval_accuracy"] > 0.75

    # 4. the logged model deployed by store:// reference classifies held-out text
    assert isinstance(results["deploy sentiment-ft"].data, ServiceReady)
    right, total = demo.held_out_right
    assert right >= total * 0.75

    # 5. the batch finished with every line answered
    status = demo.batch_status
    assert status.completed == status.total > 0
    assert status.failed == 0

    # 6. status was shown, every service was undeployed, and nothing is left running
    assert "modelbus.invoke" in text
    deleted = [e.data for k, e in results.items() if k.startswith("undeploy")]
    assert {d.service for d in deleted} == {"classifier", "generator", "sentiment-ft"}
    assert all(isinstance(d, ServiceDeleted) and d.existed for d in deleted)
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if any(str(tmp_path) in part for part in (p.info["cmdline"] or []))]
    assert leftovers == []
    # every step printed the event that went out and the one that came back
    for name in ("DeployRequested", "ServiceReady", "InvokeRequested", "InvokeCompleted", "TrainRequested",
                 "ModelLogged", "UndeployRequested", "ServiceDeleted"):
        assert name in text
