"""The embedded model server: KServe huggingfaceserver's endpoints, with server-side batching.

Run it with ``python -m serving --model_name NAME --model_id SOURCE`` (or ``modelbus serve``).
Importing this package does not import torch; the model code loads when a model does.
"""

from serving.app import create_app
from serving.batching import DynamicBatcher
from serving.cli import build_parser, main
from serving.config import ServerConfig, StorageOptions
from serving.errors import (
    InferenceFailed,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ServingError,
    UnsupportedOperation,
)
from serving.loader import ResolvedModel, resolve_model
from serving.metrics import ServingMetrics
from serving.service import ModelService, load_model
from serving.tasks import Task, infer_task

__all__ = [
    "DynamicBatcher",
    "InferenceFailed",
    "InvalidInput",
    "ModelLoadError",
    "ModelNotFound",
    "ModelService",
    "ResolvedModel",
    "ServerConfig",
    "ServingError",
    "ServingMetrics",
    "StorageOptions",
    "Task",
    "UnsupportedOperation",
    "build_parser",
    "create_app",
    "infer_task",
    "load_model",
    "main",
    "resolve_model",
]
