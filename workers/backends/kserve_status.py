"""Reading an InferenceService's status: ready, failed (and why), or still on its way.

Pure functions over the object dict, so every rule below is tested without a cluster.

* Ready: the `Ready` condition is True and the controller has seen the current spec
  (`status.observedGeneration >= metadata.generation` when both are present), so a patched
  service is not reported ready on the strength of its previous revision.
* Failed: the model could not load (`modelStatus` FailedToLoad / BlockedByFailedLoad / InvalidSpec,
  with `lastFailureInfo`), or `PredictorReady`/`Ready` is False for a reason that does not heal by
  waiting. In Standard (raw) mode `PredictorReady` is False with `MinimumReplicasUnavailable` for as
  long as the pod starts, so that reason (and the other start-up ones below) means "pending".
"""

from __future__ import annotations

from typing import Any

from workers.backends.base import Observation

#: Condition reasons that are normal while a predictor starts (Deployment/Knative roll-out states).
STARTING_REASONS = frozenset({
    "", "MinimumReplicasUnavailable", "NewReplicaSetAvailable", "ReplicaSetUpdated", "Deploying",
    "RevisionMissing", "ConfigurationsNotReady", "RoutesNotReady", "PredictorNotReady", "IngressNotConfigured",
    "Uninitialized", "Unknown", "ContainerCreating", "PodInitializing",
})


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status = obj.get("status") or {}
    return {c.get("type", ""): c for c in status.get("conditions") or [] if isinstance(c, dict)}


def _observed_current_spec(obj: dict[str, Any]) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is None or observed is None or observed >= generation


def _model_failure(status: dict[str, Any]) -> Observation | None:
    model_status = status.get("modelStatus") or {}
    states = model_status.get("states") or {}
    failed = "FailedToLoad" in (states.get("activeModelState"), states.get("targetModelState"))
    blocked = model_status.get("transitionStatus") in ("BlockedByFailedLoad", "InvalidSpec")
    if not (failed or blocked):
        return None
    info = model_status.get("lastFailureInfo") or {}
    reason = info.get("reason") or ("FailedToLoad" if failed else model_status.get("transitionStatus"))
    message = info.get("message") or "the model server failed to load the model"
    details = {k: info[k] for k in ("location", "exitCode", "modelRevisionName") if k in info}
    return Observation("failed", reason=reason, message=message, details=details)


def interpret(obj: dict[str, Any], *, fallback_url: str) -> Observation:
    """Ready, failed or pending, from one InferenceService object.

    Args:
        obj: the object as the API returns it.
        fallback_url: the in-cluster URL to report when the status carries no address yet.
    """
    status = obj.get("status") or {}
    conds = conditions(obj)
    ready = conds.get("Ready", {})
    if ready.get("status") == "True" and _observed_current_spec(obj):
        address = (status.get("address") or {}).get("url") or fallback_url
        return Observation("ready", url=address, external_url=status.get("url") or None)
    failure = _model_failure(status)
    if failure is not None:
        return failure
    for kind in ("PredictorReady", "Ready"):
        cond = conds.get(kind, {})
        if cond.get("status") == "False" and (cond.get("reason") or "") not in STARTING_REASONS:
            return Observation(
                "failed",
                reason=cond.get("reason") or f"{kind}False",
                message=cond.get("message") or f"{kind} is False",
                details={"condition": kind},
            )
    waiting = next((c for c in (conds.get("PredictorReady"), ready) if c and c.get("status") != "True"), None)
    return Observation(
        "pending",
        reason=(waiting or {}).get("reason") or None,
        message=(waiting or {}).get("message") or None,
    )
