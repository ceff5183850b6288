"""What a training job is told to do: the request, plus what the worker resolved for it.

The worker writes a `JobSpec` as JSON (a file for the local backend, a ConfigMap for a Kubernetes Job);
`python -m training SPEC.json` reads it. The request is carried verbatim so that the job sees exactly
what the user asked for; the rest is what only the worker knows (the model version, where the
artefacts go, where a `store://` base model really is).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.events import TrainRequested
from schemas.types import ALLOW_SECRET_ENVS

#: Name of the file a finished job writes last into the model folder (metrics, labels, task).
RESULT_FILE = "training_result.json"


class JobSpec(BaseModel):
    """The input of one training job.

    Example:
        >>> JobSpec(request=req, run_id="train-sentiment-1a2b", version="1a2b...", base_model="file:///m",
        ...         output_uri="file:///artifacts/default/model/sentiment/1a2b.../")  # doctest: +SKIP
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: TrainRequested
    run_id: Annotated[str, Field(min_length=1, max_length=63)]
    version: Annotated[str, Field(min_length=1, max_length=64)]
    base_model: str = Field(description="Resolved base model: file:// or s3:// folder, or huggingface://org/name.")
    output_uri: str = Field(description="Folder the finished model goes to (file:// or s3://).")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    work_dir: str | None = Field(default=None, description="Scratch directory; a temporary one when unset.")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)

    @classmethod
    def load(cls, path: Path) -> JobSpec:
        """Read a spec file; raises ValueError with every problem listed."""
        try:
            raw = json.loads(path.read_text())
            # secret-looking plain envs were already judged by the worker against its settings
            return cls.model_validate(raw, context={ALLOW_SECRET_ENVS: True})
        except (OSError, ValueError, ValidationError) as exc:
            raise ValueError(f"cannot read training spec {path}: {exc}") from exc
