"""The Kubernetes job backend: each training job is a `batch/v1` Job (plus its spec ConfigMap).

The only module that talks to the Kubernetes API for training. Errors are mapped as for serving
(`workers.backends.k8s_errors.mapped_errors`): 401/403/400/422/404 are permanent, 409/429/5xx and an
unreachable API are retried.

* submit: the ConfigMap, then the Job (`workers.manifests.job`), then the ConfigMap is handed to the
  Job (ownerReference) so the Job's TTL clean-up takes it along. A 409 on the Job means this event's job
  already exists (its name derives from the event id): it is adopted.
* follow: a watch on the Job (reconnecting, resyncing on 410), bounded by the window. `Complete` means
  the model folder is in the artefact store; `Failed` (backoff limit, or `DeadlineExceeded` ->
  `Timeout`) fetches the newest pod's log tail, whose protocol error line (e.g. `UnknownColumn`) gives
  the reason. While the job runs, the progress lines at the end of the pod's log are relayed once per
  window.
* cancel: the Job is deleted with its pods (background propagation).

The job writes its model straight to the store, so the store must be one the cluster can reach
(`s3://`); a `file://` root on the worker's disk is refused with `UnsupportedArtifactRoot`.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from schemas.settings import Settings
from training.protocol import Progress, parse_line
from workers.backends.base import Applied, BackendName, FollowPolicy, Observation
from workers.backends.jobs import OnProgress, TrainJob, outcome_from_log
from workers.backends.k8s_errors import follow_watch, mapped_errors, watch_arguments, watch_one
from workers.backends.kserve import api_client_from_settings
from workers.errors import PermanentError, RetryableError
from workers.manifests.inferenceservice import EVENT_ID_LABEL, MANAGED_BY, label_value
from workers.manifests.job import CONTAINER, build_config_map, build_job
from workers.observability import get_logger, metered, redact

log = get_logger(__name__)

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
_SUCCEEDED = ("Complete", "SuccessCriteriaMet")
_FAILED = ("Failed", "FailureTarget")


def interpret_job(job: dict[str, Any]) -> Observation:
    """What a Job's status says: pending, ready (succeeded) or failed (with Kubernetes' reason)."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for kind in _FAILED:
        if kind in conditions:
            condition = conditions[kind]
            reason = "Timeout" if condition.get("reason") == "DeadlineExceeded" else "JobFailed"
            message = f"{condition.get('reason') or kind}: {condition.get('message') or 'the training Job failed'}"
            return Observation("failed", reason=reason, message=message,
                               details={"job_reason": condition.get("reason")})
    if any(kind in conditions for kind in _SUCCEEDED) or (status.get("succeeded") or 0) > 0:
        return Observation("ready")
    return Observation("pending", reason="Running" if status.get("active") else "Pending",
                       message="the training Job is running" if status.get("active") else "the Job is starting")


class KubernetesJobs:
    """Run training jobs as Kubernetes Jobs.

    Args:
        settings: namespace, trainer image, TTL/backoff, storage credentials, train timeouts.
        api_client: an explicit client (tests, custom auth); built from settings when omitted.
    """

    name: BackendName = "kserve"
    metric_name = "kubernetes-jobs"  # the backend label of modelbus_backend_operations_total

    def __init__(self, settings: Settings, *, api_client: client.ApiClient | None = None) -> None:
        self.settings = settings
        self.namespace = settings.kubernetes.namespace
        self._api_client = api_client or api_client_from_settings(settings)
        self.batch = client.BatchV1Api(self._api_client)
        self.core = client.CoreV1Api(self._api_client)
        self._timeout = settings.kubernetes.api_timeout_s
        train = settings.train
        self.follow_policy = FollowPolicy(train.timeout_s, train.watch_window_s, train.recheck_delay_s)
        self._relayed: dict[str, int] = {}

    def close(self) -> None:
        self._api_client.close()  # type: ignore[no-untyped-call]

    # -- submit ---------------------------------------------------------------------------------------
    @metered("submit")
    def submit(self, job: TrainJob) -> Applied:
        """Create the ConfigMap and the Job; adopt the Job when this event already made it."""
        if job.spec.output_uri.startswith("file://"):
            raise PermanentError(
                f"training Jobs cannot write to {job.spec.output_uri} on the worker's disk; set the artefact store "
                "root to an s3:// location (MODELBUS_STORAGE__ROOT)", reason="UnsupportedArtifactRoot",
            )
        event, name = job.event, job.run_id
        spec = job.spec.model_copy(update={"work_dir": "/scratch/work"})
        config_map = build_config_map(event, spec.to_json(), job.profile, self.settings)
        manifest = build_job(event, job.profile, self.settings, output_uri=spec.output_uri,
                             base_model=spec.base_model)
        manifest["spec"]["activeDeadlineSeconds"] = max(1, int(job.timeout_s))
        made_config_map = self._create_config_map(config_map)
        try:
            with mapped_errors(f"create Job {name}"):
                try:
                    created = self._plain(self.batch.create_namespaced_job(
                        self.namespace, manifest, _request_timeout=self._timeout))  # type: ignore[arg-type]
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    self._adopt(name, event.id)
                    return Applied(created=False, changed=False)
        except PermanentError:
            if made_config_map:
                self._delete_config_map(name)
            raise
        log.info("created Job %s", name)
        uid = (created.get("metadata") or {}).get("uid")
        if uid:
            owned = build_config_map(event, "", job.profile, self.settings, owner_uid=uid)["metadata"]
            with mapped_errors(f"hand ConfigMap {name} to its Job"):
                self.core.patch_namespaced_config_map(name, self.namespace,
                                                      {"metadata": {"ownerReferences": owned["ownerReferences"]}},
                                                      _request_timeout=self._timeout)
        return Applied(created=True, changed=True)

    def _create_config_map(self, config_map: dict[str, Any]) -> bool:
        """Create the spec ConfigMap; False when it already exists (an earlier attempt of this event)."""
        name = config_map["metadata"]["name"]
        with mapped_errors(f"create ConfigMap {name}"):
            try:
                self.core.create_namespaced_config_map(self.namespace, config_map,  # type: ignore[arg-type]
                                                       _request_timeout=self._timeout)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                return False
        return True

    def _adopt(self, name: str, event_id: str) -> None:
        existing = self._read_job(name)
        if existing is None:
            raise RetryableError(f"Job {name} vanished while being created", delay=0.5, reason="Conflict")
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY) != "modelbus" or labels.get(EVENT_ID_LABEL) != label_value(event_id):
            raise PermanentError(f"Job {name} already exists in namespace {self.namespace} and was not made for "
                                 "this request", reason="NotManaged")
        log.info("Job %s already exists for this event; adopting it", name)

    def _plain(self, obj: Any) -> dict[str, Any]:
        return dict(self._api_client.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]

    def _read_job(self, name: str) -> dict[str, Any] | None:
        with mapped_errors(f"read Job {name}"):
            try:
                return self._plain(self.batch.read_namespaced_job(name, self.namespace,
                                                                  _request_timeout=self._timeout))
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    # -- follow ---------------------------------------------------------------------------------------
    def observe(self, name: str) -> tuple[Observation, str | None]:
        job = self._read_job(name)
        if job is None:
            return Observation("missing", reason="NotFound", message=f"Job {name} does not exist"), None
        return interpret_job(job), (job.get("metadata") or {}).get("resourceVersion")

    @metered("follow")
    def follow(self, run_id: str, window_s: float, on_progress: OnProgress) -> Observation:
        """Watch the Job until it ends or `window_s` passes; attach the pod log tail to a failure."""
        observation = follow_watch(
            f"Job {run_id}", window_s, observe=lambda: self.observe(run_id),
            watch_once=lambda version, remaining, last: self._watch(run_id, version, remaining, last),
        )
        if observation.state == "failed":
            return self._with_logs(run_id, observation)
        if observation.state == "pending":
            self._relay_progress(run_id, on_progress)
        else:
            self._relayed.pop(run_id, None)
        return observation

    def _watch(self, name: str, version: str | None, remaining: float,
               last: Observation) -> tuple[Observation, str | None]:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        events = stream.stream(  # type: ignore[no-untyped-call]
            self.batch.list_namespaced_job, self.namespace, **watch_arguments(name, version, remaining, self._timeout),
        )
        return watch_one(f"Job {name}", name, stream, events, version=version, remaining=remaining, last=last,
                         interpret=interpret_job)

    # -- logs -----------------------------------------------------------------------------------------
    def _newest_pod(self, job_name: str) -> str | None:
        with mapped_errors(f"list the pods of Job {job_name}"):
            pods = self._plain(self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{JOB_NAME_LABELS[0]}={job_name}", _request_timeout=self._timeout))
        mine = [p for p in pods.get("items") or []
                if any(((p.get("metadata") or {}).get("labels") or {}).get(k) == job_name for k in JOB_NAME_LABELS)]
        if not mine:
            return None
        mine.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
        return str(mine[-1]["metadata"]["name"])

    def pod_log(self, job_name: str, *, tail_lines: int = 200) -> str | None:
        """The end of the newest pod's trainer log; None when there is no pod or no log (yet)."""
        try:
            pod = self._newest_pod(job_name)
            if pod is None:
                return None
            with mapped_errors(f"read the log of pod {pod}"):
                try:
                    text = self.core.read_namespaced_pod_log(pod, self.namespace, container=CONTAINER,
                                                             tail_lines=tail_lines, _request_timeout=self._timeout)
                except ApiException as exc:
                    if exc.status in (400, 404):  # not started yet, or already gone
                        return None
                    raise
        except (PermanentError, RetryableError) as exc:
            log.warning("cannot read the logs of Job %s: %s", job_name, exc)
            return None
        return str(text)

    def _with_logs(self, name: str, observation: Observation) -> Observation:
        text = self.pod_log(name) or ""
        limit = self.settings.train.log_tail_bytes
        tail = redact(text[-limit:]).strip() or "(no pod log)"
        from_log = outcome_from_log(text.splitlines(), tail=tail, ended=observation.message or "")
        self._relayed.pop(name, None)
        if from_log.state == "failed" and from_log.reason != "JobFailed":
            return Observation("failed", reason=from_log.reason, message=from_log.message,
                               details={**observation.details, **from_log.details})
        return Observation("failed", reason=observation.reason, message=observation.message,
                           details={**observation.details, "log_tail": tail})

    def _relay_progress(self, name: str, on_progress: OnProgress) -> None:
        text = self.pod_log(name, tail_lines=50)
        if not text:
            return
        lines = [p for p in (parse_line(line) for line in text.splitlines()) if isinstance(p, Progress)]
        seen = self._relayed.get(name, -1)
        for progress in lines:
            if progress.step is not None and progress.step > seen:
                on_progress(progress)
                seen = progress.step
        self._relayed[name] = seen

    # -- cancel ---------------------------------------------------------------------------------------
    @metered("cancel")
    def cancel(self, run_id: str) -> bool:
        """Delete the Job and its pods; the ConfigMap goes with it (or is deleted here when unowned)."""
        with mapped_errors(f"delete Job {run_id}"):
            try:
                self.batch.delete_namespaced_job(run_id, self.namespace, propagation_policy="Background",
                                                 _request_timeout=self._timeout)
                existed = True
            except ApiException as exc:
                if exc.status != 404:
                    raise
                existed = False
        self._delete_config_map(run_id)
        self._relayed.pop(run_id, None)
        return existed

    def _delete_config_map(self, name: str) -> None:
        with mapped_errors(f"delete ConfigMap {name}"):
            try:
                self.core.delete_namespaced_config_map(name, self.namespace, _request_timeout=self._timeout)
            except ApiException as exc:
                if exc.status != 404:
                    raise
