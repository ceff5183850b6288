"""Least privilege: each worker's Role grants exactly the Kubernetes API calls its code makes.

The calls are derived from the code (tests/ops/k8s_calls.py): starting at the worker's entry module,
every Kubernetes client method its reachable code references becomes the (API group, resource, verb)
that request needs. A new call without a Role update fails here, and so does a permission nobody uses.
"""

from __future__ import annotations

import ast

import pytest

from tests.ops.k8s_calls import kubernetes_calls, role_permissions, worker_permissions
from tests.ops.kustomize import SKIP_REASON, kustomize_command, named, objects

pytestmark = pytest.mark.skipif(kustomize_command() is None, reason=SKIP_REASON)

ENTRY = {"deploy": "workers.deploy.tasks", "train": "workers.train.tasks", "invoke": "workers.invoke"}


def _used(worker: str) -> set[tuple[str, str, str]]:
    return set().union(*worker_permissions(ENTRY[worker]).values())


def _bound_role(account: str) -> dict | None:
    bindings = [b for b in objects("base", "RoleBinding")
                if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b["subjects"])]
    assert len(bindings) <= 1
    if not bindings:
        return None
    assert bindings[0]["roleRef"]["kind"] == "Role"  # namespaced: nothing cluster-wide
    return named("base", "Role", bindings[0]["roleRef"]["name"])


@pytest.mark.parametrize("worker", ["deploy", "train"])
def test_the_role_of_each_kubernetes_worker_grants_exactly_what_its_code_calls(worker):
    account = named("base", "Deployment", f"modelbus-{worker}")["spec"]["template"]["spec"]["serviceAccountName"]
    role = _bound_role(account)
    assert role is not None, f"{account} has no Role"
    used = _used(worker)
    assert used, f"found no Kubernetes API call for the {worker} worker"
    granted = role_permissions(role)
    assert sorted(used - granted) == [], "calls the Role does not allow"
    assert sorted(granted - used) == [], "permissions no code uses"


def test_the_invoke_worker_makes_no_api_call_and_gets_no_token():
    assert _used("invoke") == set()
    pod = named("base", "Deployment", "modelbus-invoke")["spec"]["template"]["spec"]
    assert _bound_role(pod["serviceAccountName"]) is None
    assert pod["automountServiceAccountToken"] is False
    assert named("base", "ServiceAccount", pod["serviceAccountName"])["automountServiceAccountToken"] is False


def test_no_cluster_wide_rbac_is_shipped():
    for target in ("base", "overlays/dev", "overlays/production"):
        kinds = {o["kind"] for o in objects(target, "ClusterRole") + objects(target, "ClusterRoleBinding")}
        assert kinds == set()


def test_the_derivation_reads_calls_watches_subresources_and_custom_objects():
    # The derivation itself, on code written the way the backends write it
    code = '''
from kubernetes import client, watch
GROUP, PLURAL = "serving.kserve.io", "inferenceservices"
def work(custom: client.CustomObjectsApi, core: client.CoreV1Api, batch: client.BatchV1Api):
    batch.create_namespaced_job("ns", {})
    core.read_namespaced_pod_log("pod", "ns")
    core.list_namespaced_pod("ns")
    custom.patch_namespaced_custom_object(GROUP, "v1beta1", "ns", PLURAL, "name", {})
    for _ in watch.Watch().stream(custom.list_namespaced_custom_object, GROUP, "v1beta1", "ns", PLURAL):
        pass
'''
    tree = ast.parse(code)
    namespace: dict = {}
    exec(compile(tree, "<test>", "exec"), namespace)  # the constants the derivation resolves
    import sys
    import types

    module = types.ModuleType("tests_ops_fake_backend")
    module.__dict__.update(namespace)
    sys.modules[module.__name__] = module
    try:
        found = kubernetes_calls(module.__name__, [tree])
    finally:
        del sys.modules[module.__name__]
    assert found == {
        ("batch", "jobs", "create"),
        ("", "pods/log", "get"),
        ("", "pods", "list"),
        ("serving.kserve.io", "inferenceservices", "patch"),
        ("serving.kserve.io", "inferenceservices", "watch"),
    }
