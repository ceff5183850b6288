"""The deploy worker: DeployRequested -> a served model (KServe or local) -> ServiceReady or DeployFailed."""

from workers.deploy.handlers import deploy_failure, handle_deploy, handle_follow, handle_undeploy

__all__ = ["deploy_failure", "handle_deploy", "handle_follow", "handle_undeploy"]
