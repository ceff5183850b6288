"""Reading an InferenceService's status the way KServe's controller writes it."""

from __future__ import annotations

from typing import Any

import pytest

from workers.backends.kserve_status import interpret

FALLBACK = "http://svc-predictor.ns.svc.cluster.local"


def isvc(*conditions: dict[str, Any], generation: int | None = None, **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "svc"}
    if generation is not None:
        meta["generation"] = generation
    return {"metadata": meta, "status": {"conditions": list(conditions), **status}}


def cond(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def test_ready_reports_the_internal_and_external_urls() -> None:
    obj = isvc(cond("Ready", "True"), address={"url": "http://svc-predictor.ns.svc.cluster.local:80"},
               url="http://svc-ns.example.com")
    seen = interpret(obj, fallback_url=FALLBACK)
    assert (seen.state, seen.url, seen.external_url) == (
        "ready", "http://svc-predictor.ns.svc.cluster.local:80", "http://svc-ns.example.com")


def test_ready_without_an_address_yet_uses_the_predictor_service_name() -> None:
    assert interpret(isvc(cond("Ready", "True")), fallback_url=FALLBACK).url == FALLBACK


def test_ready_for_an_older_generation_is_not_ready_for_the_patched_spec() -> None:
    obj = isvc(cond("Ready", "True"), generation=3, observedGeneration=2)
    assert interpret(obj, fallback_url=FALLBACK).state == "pending"
    obj["status"]["observedGeneration"] = 3
    assert interpret(obj, fallback_url=FALLBACK).state == "ready"


def test_a_starting_pod_is_pending_not_failed() -> None:
    obj = isvc(cond("PredictorReady", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum"),
               cond("Ready", "False", "MinimumReplicasUnavailable"))
    seen = interpret(obj, fallback_url=FALLBACK)
    assert (seen.state, seen.reason) == ("pending", "MinimumReplicasUnavailable")


def test_no_status_at_all_is_pending() -> None:
    assert interpret({"metadata": {"name": "svc"}}, fallback_url=FALLBACK).state == "pending"


@pytest.mark.parametrize("reason", ["ProgressDeadlineExceeded", "RevisionFailed", "FailedCreate"])
def test_predictor_ready_false_for_a_lasting_reason_is_a_failure_with_that_reason(reason: str) -> None:
    obj = isvc(cond("PredictorReady", "False", reason, "pods cannot be scheduled"), cond("Ready", "False", reason))
    seen = interpret(obj, fallback_url=FALLBACK)
    assert (seen.state, seen.reason, seen.message) == ("failed", reason, "pods cannot be scheduled")


def test_a_model_that_failed_to_load_reports_the_last_failure() -> None:
    obj = isvc(
        cond("Ready", "False", "MinimumReplicasUnavailable"),
        modelStatus={
            "transitionStatus": "BlockedByFailedLoad",
            "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "CUDA out of memory", "exitCode": 1,
                                "location": "kserve-container"},
        },
    )
    seen = interpret(obj, fallback_url=FALLBACK)
    assert (seen.state, seen.reason, seen.message) == ("failed", "ModelLoadFailed", "CUDA out of memory")
    assert seen.details == {"location": "kserve-container", "exitCode": 1}
