"""The fine-tuning job modelbus runs for a `TrainRequested` (locally as a process, or as a Kubernetes Job).

`python -m training SPEC.json` reads a `JobSpec`, trains with a built-in recipe (sequence or token
classification, causal LM) or the user's `train(context)` handler, and stores the model folder in the
artefact store, speaking to the worker through JSON lines on stdout (`training.protocol`).
"""

from training.context import TrainContext
from training.errors import SpecError
from training.protocol import Progress, parse_line
from training.spec import RESULT_FILE, JobSpec

__all__ = ["RESULT_FILE", "JobSpec", "Progress", "SpecError", "TrainContext", "parse_line"]
