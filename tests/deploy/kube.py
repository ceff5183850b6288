"""A local Kubernetes API for tests: kmock's KubernetesEmulator on a real port, in its own thread.

The emulator is async; the code under test uses the official (sync) `kubernetes` client over HTTP,
so the emulator runs its own event loop in a background thread. The test plays KServe's controller
through the same API (`set_status` patches the status subresource, as a controller does).

Emulator quirks handled here (kmock 0.8): a create answers 200 while the client expects 201, so
create is answered with 201 and the stored object; objects get no resourceVersion.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import kmock
from kubernetes import client
from kubernetes.client.exceptions import ApiException

ISVC = "serving.kserve.io/v1beta1/inferenceservices"
SERVICE_ACCOUNTS = "v1/serviceaccounts"
T = TypeVar("T")


@attrs.define
class Injected:
    """An API error to answer instead of serving a request (the request then changes nothing)."""

    action: kmock.action
    plural: str
    status: int
    times: int | None
    message: str


@attrs.define(kw_only=True)
class ScriptedEmulator(kmock.KubernetesEmulator):
    """The emulator, plus API errors injected before it stores anything (as a real server fails)."""

    injected: list[Injected] = attrs.field(factory=list)

    async def _handle(self, request: kmock.Request) -> Any:
        for failure in self.injected:
            resource = request.resource
            if (failure.times is None or failure.times > 0) and request.action == failure.action \
                    and resource is not None and resource.plural == failure.plural:
                if failure.times is not None:
                    failure.times -= 1
                raise kmock.KubernetesError(status=failure.status, reason="Injected", message=failure.message)
        return await super()._handle(request)


class Kube:
    """A running emulator: `url` for clients, `api`/`core` for the test's own (controller) calls."""

    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._thread.start()
        if not self._started.wait(10) or self._failure:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._failure}")
        self.api_client = self.new_api_client()
        self.api = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the constructor
            self._failure = exc
            self._started.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ScriptedEmulator() as emulator, kmock.Server(emulator) as server:
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            emulator.resources[ISVC] = kmock.ResourceInfo(kind="InferenceService", namespaced=True,
                                                          subresources={"status"})
            emulator.resources[SERVICE_ACCOUNTS] = kmock.ResourceInfo(kind="ServiceAccount", namespaced=True)
            for plural in (ISVC, SERVICE_ACCOUNTS):
                emulator[kmock.action.CREATE, kmock.resource(plural)] << 201 << (lambda request: request.data)
            self._started.set()
            await self._stop.wait()

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the emulator's loop (its DSL is not thread-safe) and return the result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    def new_api_client(self) -> client.ApiClient:
        configuration = client.Configuration(host=self.url)
        configuration.retries = 0
        return client.ApiClient(configuration)

    def close(self) -> None:
        self.api_client.close()
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()

    # -- reactions -------------------------------------------------------------------------------------
    def fail_requests(self, action: kmock.action, status: int, *, times: int | None = None,
                      resource: str = ISVC, message: str = "injected by the test") -> None:
        """Answer the next `times` (or all) `action` requests on `resource` with an API error."""
        plural = resource.rsplit("/", 1)[-1]
        self.call(lambda: self.emulator.injected.append(Injected(action, plural, status, times, message)))

    def requests(self, action: kmock.action, resource: str = ISVC) -> int:
        return self.call(lambda: len(self.emulator[action, kmock.resource(resource)]))

    def wait_requests(self, action: kmock.action, count: int, *, resource: str = ISVC, timeout: float = 20.0) -> None:
        """Block until the API has received `count` `action` requests on `resource`."""
        end = time.monotonic() + timeout
        while self.requests(action, resource) < count:
            if time.monotonic() > end:
                raise AssertionError(f"fewer than {count} {action.name} requests within {timeout}s")
            time.sleep(0.05)

    def names(self, resource: str = ISVC) -> list[str]:
        """The names of the objects of `resource` that exist now."""
        items = self.call(lambda: [(key, obj) for key, obj in self.emulator.objects.items()])
        plural = resource.rsplit("/", 1)[-1]
        return sorted(name for (res, _, name), obj in items if res.plural == plural and not obj.deleted)

    # -- the test as KServe's controller ---------------------------------------------------------------
    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.api.get_namespaced_custom_object("serving.kserve.io", "v1beta1", self.namespace,
                                                              "inferenceservices", name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def wait_for(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        """The InferenceService once the worker has created it."""
        end = time.monotonic() + timeout
        while (obj := self.get(name)) is None:
            if time.monotonic() > end:
                raise AssertionError(f"InferenceService {name} was not created within {timeout}s")
            time.sleep(0.05)
        return obj

    def set_status(self, name: str, status: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object_status("serving.kserve.io", "v1beta1", self.namespace,
                                                       "inferenceservices", name, {"status": status})

    def become_ready(self, name: str) -> None:
        self.set_status(name, {
            "conditions": [{"type": t, "status": "True"} for t in ("IngressReady", "PredictorReady", "Ready")],
            "address": {"url": f"http://{name}-predictor.{self.namespace}.svc.cluster.local"},
            "url": f"http://{name}-{self.namespace}.example.com",
        })

    def fail_to_load(self, name: str, message: str) -> None:
        self.set_status(name, {
            "conditions": [
                {"type": "PredictorReady", "status": "False", "reason": "MinimumReplicasUnavailable"},
                {"type": "Ready", "status": "False", "reason": "MinimumReplicasUnavailable"},
            ],
            "modelStatus": {
                "transitionStatus": "BlockedByFailedLoad",
                "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
                "lastFailureInfo": {"reason": "ModelLoadFailed", "message": message, "exitCode": 1},
            },
        })


@contextmanager
def running_kube(namespace: str = "default") -> Iterator[Kube]:
    kube = Kube(namespace)
    try:
        yield kube
    finally:
        kube.close()
