"""The serving error tree: what went wrong, and which HTTP status a client sees for it.

Model code raises these; the app maps them to a response in one place (``app.py``), so a bad
request never turns into a 500 with a traceback. ``ModelLoadError`` is raised before the server
listens and becomes a non-zero exit with a one-line message.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class: an error with an HTTP status and a message safe to show to the client."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    """The request body is malformed or asks for something the model cannot do with it (400)."""

    status_code = 400


class UnsupportedOperation(ServingError):
    """The endpoint does not apply to this model's task, e.g. completions on a classifier (400)."""

    status_code = 400


class ModelNotFound(ServingError):
    """The request names a model this server does not serve (404)."""

    status_code = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"Model with name {name} does not exist.")
        self.name = name


class NotImplementedFeature(ServingError):
    """A protocol feature the runtime deliberately does not implement (501)."""

    status_code = 501


class InferenceFailed(ServingError):
    """The model raised while running a batch; the message names the exception, not a traceback (500)."""

    status_code = 500


class ModelLoadError(Exception):
    """The model could not be resolved, downloaded or loaded. Raised before the server listens."""
