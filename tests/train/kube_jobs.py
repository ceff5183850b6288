"""A local Kubernetes API for the job backend's tests: kmock's emulator with Jobs, ConfigMaps and Pods.

Built on the deploy tests' `Kube` (emulator in its own thread, real HTTP, official client). The test
plays the Job controller and the kubelet: it creates the job's pod with a log, and patches the Job's
status to Complete or Failed, through the same API a controller uses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kmock
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.deploy.kube import Kube, ScriptedEmulator

JOBS = "batch/v1/jobs"
CONFIG_MAPS = "v1/configmaps"
PODS = "v1/pods"


class JobKube(Kube):
    """The emulator serving Jobs (with status), ConfigMaps and Pods (with logs set by the test)."""

    def __init__(self, namespace: str = "default") -> None:
        self.logs: dict[str, str] = {}
        super().__init__(namespace)
        self.batch = client.BatchV1Api(self.api_client)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ScriptedEmulator() as emulator, kmock.Server(emulator) as server:
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            emulator.resources[JOBS] = kmock.ResourceInfo(kind="Job", namespaced=True, subresources={"status"})
            emulator.resources[CONFIG_MAPS] = kmock.ResourceInfo(kind="ConfigMap", namespaced=True)
            emulator.resources[PODS] = kmock.ResourceInfo(kind="Pod", namespaced=True, subresources={"log"})
            for plural in (JOBS, CONFIG_MAPS, PODS):
                emulator[kmock.action.CREATE, kmock.resource(plural)] << 201 << (lambda request: request.data)
            pod_logs = kmock.resource(PODS), kmock.subresource("log")
            emulator[pod_logs] << (lambda request: self.logs.get(request.name, ""))
            self._started.set()
            await self._stop.wait()

    # -- what the test inspects --------------------------------------------------------------------------
    def job(self, name: str) -> dict[str, Any] | None:
        try:
            found = self.batch.read_namespaced_job(name, self.namespace)
            return dict(self.api_client.sanitize_for_serialization(found))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def config_map(self, name: str) -> dict[str, Any] | None:
        try:
            found = self.core.read_namespaced_config_map(name, self.namespace)
            return dict(self.api_client.sanitize_for_serialization(found))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def wait_for_job(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while (job := self.job(name)) is None:
            if time.monotonic() > end:
                raise AssertionError(f"Job {name} was not created within {timeout}s")
            time.sleep(0.05)
        return job

    def wait_for_watch(self, count: int = 1, timeout: float = 10.0) -> None:
        """Until the worker has opened `count` watches on Jobs (it is now following, not polling)."""
        end = time.monotonic() + timeout
        while self.requests(kmock.action.WATCH, JOBS) < count:
            if time.monotonic() > end:
                raise AssertionError("nobody watched the Jobs")
            time.sleep(0.02)

    # -- the test as the Job controller and kubelet -------------------------------------------------------
    def start_pod(self, job: str, log: str, suffix: str = "x1") -> str:
        name = f"{job}-{suffix}"
        self.core.create_namespaced_pod(self.namespace, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace,
                         "labels": {"batch.kubernetes.io/job-name": job, "job-name": job},
                         "creationTimestamp": f"2026-09-01T12:00:0{len(self.logs)}Z"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "trainer"}]},
        })
        self.logs[name] = log
        self.set_job_status(job, {"active": 1})
        return name

    def set_job_status(self, name: str, status: dict[str, Any]) -> None:
        self.batch.patch_namespaced_job_status(name, self.namespace, {"status": status})

    def complete(self, name: str) -> None:
        self.set_job_status(name, {"active": 0, "succeeded": 1,
                                   "conditions": [{"type": "Complete", "status": "True"}]})

    def fail(self, name: str, reason: str = "BackoffLimitExceeded",
             message: str = "Job has reached the specified backoff limit") -> None:
        self.set_job_status(name, {"active": 0, "failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": reason, "message": message}]})


@contextmanager
def running_job_kube(namespace: str = "default") -> Iterator[JobKube]:
    kube = JobKube(namespace)
    try:
        yield kube
    finally:
        kube.close()
