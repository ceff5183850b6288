"""deploy/: every manifest parses, renders with kustomize and would be accepted by the cluster.

And what is rendered fits together: the containers run real `modelbus` commands with settings the
code knows, probes hit the health endpoints, KEDA watches the real queue names through the
management API, and everything referenced (ConfigMaps, Secrets, accounts, scale targets) exists.
"""

from __future__ import annotations

import copy
import re

import pytest
import typer
import yaml

from producers.cli.main import app as cli_app
from schemas.topology import WORKER_QUEUES
from tests.ops.kustomize import (
    DEPLOY,
    SKIP_REASON,
    TARGETS,
    is_settings_env,
    kustomize_command,
    named,
    objects,
    render,
    validate,
)

needs_kustomize = pytest.mark.skipif(kustomize_command() is None, reason=SKIP_REASON)
WORKERS = ("deploy", "train", "invoke")
OVERLAYS = ("overlays/dev", "overlays/production")


def test_every_yaml_file_under_deploy_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} is empty"


@needs_kustomize
@pytest.mark.parametrize("target", TARGETS)
def test_each_kustomization_renders_and_every_object_validates(target):
    rendered = render(target)
    assert {o["kind"] for o in rendered} >= {"Deployment", "ServiceAccount", "Role", "RoleBinding", "ConfigMap",
                                             "ScaledObject", "TriggerAuthentication", "PodDisruptionBudget"}
    for obj in rendered:
        validate(obj)


@needs_kustomize
def test_the_validation_would_catch_a_misspelt_field():
    deployment = copy.deepcopy(named("base", "Deployment", "modelbus-deploy"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbes"] = {}
    with pytest.raises(AssertionError, match="livenesProbes"):
        validate(deployment)
    scaled = copy.deepcopy(named("base", "ScaledObject", "modelbus-deploy"))
    scaled["spec"]["triggers"][0]["metadata"]["protocol"] = "amqp"  # regex needs the management API
    with pytest.raises(AssertionError, match="protocol"):
        validate(scaled)


@needs_kustomize
@pytest.mark.parametrize("target", OVERLAYS)
def test_overlays_put_everything_in_one_namespace_with_a_rabbitmq_cluster(target):
    namespaces = {o["metadata"].get("namespace") for o in render(target)}
    assert len(namespaces) == 1
    assert None not in namespaces
    (cluster,) = objects(target, "RabbitmqCluster")
    assert cluster["spec"]["replicas"] in (1, 3)


@needs_kustomize
@pytest.mark.parametrize("worker", WORKERS)
def test_each_worker_runs_a_real_modelbus_command_with_probes_on_its_metrics_port(worker):
    deployment = named("base", "Deployment", f"modelbus-{worker}")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # The image's entrypoint is `modelbus`: the args must parse as a modelbus command
    command = typer.main.get_command(cli_app)
    with command.make_context("modelbus", list(container["args"]), resilient_parsing=False) as ctx:
        sub = command.get_command(ctx, container["args"][0])
        assert sub is not None, f"modelbus has no command {container['args'][0]!r}"
        sub_ctx = sub.make_context("worker", list(container["args"][1:]), parent=ctx)
        assert sub_ctx.params["name"] == worker
        port = sub_ctx.params["metrics_port"]
    (metrics,) = container["ports"]
    assert metrics["containerPort"] == port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@needs_kustomize
@pytest.mark.parametrize("target", TARGETS)
def test_every_modelbus_setting_named_in_the_manifests_exists_in_settings(target):
    names = set()
    for cm in objects(target, "ConfigMap"):
        names |= {k for k in cm.get("data", {}) if k.startswith("MODELBUS_")}
    for deployment in objects(target, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", []) if e["name"].startswith("MODELBUS_")}
    assert "MODELBUS_BROKER__URL" in names
    unknown = sorted(n for n in names if not is_settings_env(n))
    assert not unknown, f"not settings fields: {unknown}"


@needs_kustomize
@pytest.mark.parametrize("target", TARGETS)
def test_everything_a_deployment_references_exists(target):
    configmaps = {o["metadata"]["name"] for o in objects(target, "ConfigMap")}
    secrets = {o["metadata"]["name"] for o in objects(target, "Secret")}
    accounts = {o["metadata"]["name"] for o in objects(target, "ServiceAccount")}
    out_of_band = {"modelbus-broker"} if target == "overlays/production" else set()
    for deployment in objects(target, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in accounts
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
                else:
                    assert source["secretRef"].get("optional") or source["secretRef"]["name"] in secrets
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["name"] in secrets | out_of_band, f"{ref['name']} missing in {target}"
        labels = pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        pdbs = [p for p in objects(target, "PodDisruptionBudget")
                if p["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()]
        assert len(pdbs) == 1, f"{deployment['metadata']['name']} needs exactly one PodDisruptionBudget"


@needs_kustomize
@pytest.mark.parametrize("worker", WORKERS)
def test_keda_scales_each_worker_on_its_real_queues_through_the_management_api(worker):
    scaled = named("base", "ScaledObject", f"modelbus-{worker}")
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"modelbus-{worker}"
    named("base", "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "rabbitmq"
    assert meta["protocol"] == "http"  # so unacked (in-progress) messages count
    assert meta["mode"] == "QueueLength"
    queue = WORKER_QUEUES[worker]
    watched = {queue.name, queue.task_queue, queue.dead_letter_queue, "modelbus.other"}
    if meta.get("useRegex") == "true":
        matched = {q for q in watched if re.fullmatch(meta["queueName"], q)}
    else:
        matched = {q for q in watched if q == meta["queueName"]}
    expected = {queue.name} if worker == "invoke" else {queue.name, queue.task_queue}
    assert matched == expected
    # the credentials come from the broker Secret through a TriggerAuthentication
    auth = named("base", "TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    secret = named("base", "Secret", ref["name"])
    assert secret["stringData"][ref["key"]].startswith("http")


@needs_kustomize
def test_the_profiles_configmap_carries_the_profiles_file_the_workers_are_pointed_at():
    settings = named("base", "ConfigMap", next(o["metadata"]["name"] for o in objects("base", "ConfigMap")
                                               if "MODELBUS_PROFILES_FILE" in o.get("data", {})))
    profiles_path = settings["data"]["MODELBUS_PROFILES_FILE"]
    deployment = named("base", "Deployment", "modelbus-deploy")
    pod = deployment["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if profiles_path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    profiles = named("base", "ConfigMap", volume["configMap"]["name"])
    filename = profiles_path[len(mount["mountPath"]) + 1:]
    assert profiles["data"][filename] == (DEPLOY / "profiles.yaml").read_text()
