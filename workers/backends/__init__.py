"""Where model servers run: `kserve` (InferenceServices on Kubernetes) and `local` (processes here)."""

from workers.backends.base import Applied, FollowPolicy, Observation, ServiceBackend

__all__ = ["Applied", "FollowPolicy", "Observation", "ServiceBackend"]
