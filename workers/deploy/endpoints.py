"""Where a ready service answers, by task: the URLs a `ServiceReady` announces.

Generative tasks are served over the OpenAI API only (KServe's Hugging Face runtime raises on v1/v2
inference for them); classifiers, fill-mask and token tasks over v1/v2; embedders over both v2 and
`/openai/v1/embeddings`. When the task is unknown (inferred by the server) every family is listed.
"""

from __future__ import annotations

from schemas.events import ServiceEndpoints
from schemas.types import Task


def service_endpoints(url: str, model_name: str, task: Task | None) -> ServiceEndpoints:
    """The endpoint URLs of a service at base `url`.

    Example:
        >>> service_endpoints("http://h:8080", "m", Task.sequence_classification).v2_infer
        'http://h:8080/v2/models/m/infer'
    """
    base = url.rstrip("/")
    openai = f"{base}/openai/v1"
    inference = {"v2_infer": f"{base}/v2/models/{model_name}/infer",
                 "v1_predict": f"{base}/v1/models/{model_name}:predict"}
    generative = {"openai_base": openai, "openai_completions": f"{openai}/completions",
                  "openai_chat": f"{openai}/chat/completions"}
    embeddings = {"openai_base": openai, "openai_embeddings": f"{openai}/embeddings"}
    if task is None:
        return ServiceEndpoints(**inference, **generative, openai_embeddings=embeddings["openai_embeddings"])
    if task.generative:
        return ServiceEndpoints(**generative)
    if task is Task.text_embedding:
        return ServiceEndpoints(**inference, **embeddings)
    return ServiceEndpoints(**inference)
