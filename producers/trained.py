"""A fine-tuned model version as the client sees it: what `ModelBus.train(..., wait=True)` returns.

It plays the part of the platform SDK's model entity after `log_model(...)`: its store reference,
path and metrics, plus the two ways to serve it (deploy it now, or wait for the deployment the
training request asked for in its `deploy` block).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from schemas.envelope import CloudEvent, derived_id, new_event
from schemas.events import DeployAfterTraining, DeployRequested, ModelLogged, TrainRequested

if TYPE_CHECKING:
    from producers.client import ModelBus, Service


class LoggedModel:
    """A model version announced by `ModelLogged`.

    Example:
        >>> model = bus.train("sentiment", base_model="file:///models/minilm",  # doctest: +SKIP
        ...                   dataset="file:///data/reviews.csv", hyperparameters={"epochs": 2})
        >>> model.store_uri, model.metrics["eval_accuracy"]
        ('store://default/model/sentiment:0b9c...', 0.97)
        >>> model.deploy("sentiment").invoke(json={"instances": ["great movie"]})
    """

    def __init__(self, bus: ModelBus, logged: CloudEvent[ModelLogged], request: CloudEvent[TrainRequested]) -> None:
        self.bus = bus
        self.event = logged
        self.request = request

    @property
    def data(self) -> ModelLogged:
        return self.event.data

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def version(self) -> str:
        return self.data.version

    @property
    def store_uri(self) -> str:
        return self.data.store_uri

    @property
    def path(self) -> str:
        return self.data.path

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.data.metrics)

    @property
    def labels(self) -> list[str] | None:
        return self.data.labels

    def deploy(self, service: str, *, wait: bool = True, timeout: float = 900.0,
               **fields: Any) -> Service | CloudEvent[Any]:
        """Serve this version by its `store://` reference (see `ModelBus.deploy`)."""
        fields.setdefault("task", self.data.task)
        return self.bus.deploy(service, path=self.store_uri, wait=wait, timeout=timeout, **fields)

    def deployment(self, *, timeout: float = 900.0) -> Service:
        """Wait for the service the training request's `deploy` block asked for.

        Raises:
            ValueError: the request had no `deploy` block.
            RequestFailed: the deployment failed (DeployFailed).
            ReplyTimeout: it was not ready within `timeout` seconds.
        """
        from producers.client import Service

        deploy = self.request.data.deploy
        if deploy is None:
            raise ValueError(f"the training request for {self.name} asked for no deployment")
        # The worker publishes the chained DeployRequested with this id; its outcome names it as cause.
        chained = new_event(DeployRequested(service=deploy.service, path=self.store_uri),
                            event_id=derived_id(self.request.id, DeployAfterTraining.id_purpose))
        ready = self.bus.wait(chained, timeout=timeout)
        return Service(self.bus, ready.data)

    def __repr__(self) -> str:
        return f"LoggedModel({self.store_uri!r}, path={self.path!r}, metrics={self.metrics})"
