"""Why a training job stops early, as machine-readable reasons the worker copies into `TrainFailed`.

A `SpecError` is the user's to fix (a missing column, an unknown base model, a hyper-parameter the model
cannot take): the job reports it on its protocol line and exits with `EXIT_SPEC_ERROR`, and nothing is
written to the artefact store.
"""

from __future__ import annotations

#: Exit codes of `python -m training`.
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_SPEC_ERROR = 2

UNKNOWN_BASE_MODEL = "UnknownBaseModel"
UNKNOWN_COLUMN = "UnknownColumn"
INVALID_HYPERPARAMETER = "InvalidHyperParameter"
DATASET_NOT_FOUND = "DatasetNotFound"
INVALID_DATASET = "InvalidDataset"
INVALID_SPEC = "InvalidSpec"
CODE_NOT_FOUND = "CodeNotFound"
CODE_FAILED = "CustomCodeFailed"
REQUIREMENTS_FAILED = "RequirementsFailed"
NO_MODEL_LOGGED = "NoModelLogged"
STORAGE_FAILED = "ArtifactStoreFailed"
TRAINING_FAILED = "TrainingFailed"


class SpecError(Exception):
    """The training spec cannot be run as given; `reason` is one of the constants above.

    Example:
        >>> raise SpecError(UNKNOWN_COLUMN, "dataset has no column 'sentence'; columns: text, label")
        Traceback (most recent call last):
        training.errors.SpecError: dataset has no column 'sentence'; columns: text, label
    """

    def __init__(self, reason: str, message: str, *, exit_code: int = EXIT_SPEC_ERROR) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code
