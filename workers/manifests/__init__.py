"""Kubernetes manifests as pure functions of (event, profile, settings)."""

from workers.manifests.inferenceservice import build_inference_service, build_manifests

__all__ = ["build_inference_service", "build_manifests"]
