"""The Python client: publish requests and wait for their outcome events.

`ModelBus` is to modelbus what the platform SDK is to its backend, with events instead of blocking
HTTP calls: `bus.deploy(...)` publishes a `DeployRequested` and, with `wait=True`, returns when the
`ServiceReady` (or raises on `DeployFailed`) that it caused arrives on the client's reply queue.

Example:
    >>> bus = ModelBus()  # doctest: +SKIP
    >>> svc = bus.deploy("sentiment", path="huggingface://distilbert/distilbert-base-uncased-finetuned-sst-2-english")
    >>> svc.invoke(json={"inputs": [...]})
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pika.exceptions as pe

from producers.errors import BrokerUnavailable, ReplyTimeout
from producers.publisher import Publisher
from schemas.envelope import CloudEvent, EventDecodeError, decode, new_event
from schemas.events import (
    DeployFailed,
    DeployRequested,
    Event,
    Failure,
    InvokeCompleted,
    InvokeFailed,
    InvokeRequested,
    ModelLogged,
    Request,
    ServiceDeleted,
    ServiceReady,
    TrainFailed,
    TrainProgress,
    TrainRequested,
    UndeployRequested,
)
from schemas.settings import Settings
from schemas.topology import REPLY_QUEUE_PREFIX
from schemas.types import InvokeProtocol

if TYPE_CHECKING:
    from producers.trained import LoggedModel

#: The events that end each kind of request.
OUTCOMES: dict[type[Request], tuple[type[Event], ...]] = {
    DeployRequested: (ServiceReady, DeployFailed),
    UndeployRequested: (ServiceDeleted, DeployFailed),  # DeployFailed: the deletion itself failed
    TrainRequested: (ModelLogged, TrainFailed),
    InvokeRequested: (InvokeCompleted, InvokeFailed),
}


class RequestFailed(RuntimeError):
    """A request ended in a `*Failed` event; `reason` is machine-readable, `event` the whole envelope."""

    def __init__(self, event: CloudEvent[Any]) -> None:
        data: Failure = event.data
        super().__init__(f"{type(data).__name__}: {data.reason}: {data.message}")
        self.reason = data.reason
        self.event = event


class ModelBus:
    """Client of the modelbus events API (sync; one instance per thread).

    Args:
        settings: broker and defaults; read from the environment when omitted.
        source: CloudEvents `source` of the events this client publishes.
    """

    def __init__(self, settings: Settings | None = None, *, source: str = "/modelbus/client") -> None:
        self.settings = settings or Settings()
        self.source = source
        self._publisher = Publisher(self.settings.broker)
        self._reply_queue: str | None = None
        self._reply_channel: Any = None
        self._early: dict[str, list[CloudEvent[Any]]] = {}

    def close(self) -> None:
        """Delete the reply queue (else it expires by itself) and close the connection."""
        channel = self._reply_channel
        if self._reply_queue is not None and channel is not None and channel.is_open:
            with contextlib.suppress(pe.AMQPError, OSError):  # it expires by itself anyway
                channel.queue_delete(self._reply_queue)
        self._publisher.close()
        self._reply_queue = None
        self._reply_channel = None

    def __enter__(self) -> ModelBus:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- core -------------------------------------------------------------------------------------
    def publish(self, data: Event, *, cause: CloudEvent[Any] | None = None,
                correlation_id: str | None = None) -> CloudEvent[Any]:
        """Publish one event to the events exchange and return its envelope (confirmed by the broker)."""
        event = new_event(data, source=self.source, cause=cause, correlation_id=correlation_id)
        self._publisher.publish(event)
        return event

    @property
    def reply_queue(self) -> str:
        """This client's reply queue (created on first use, deleted when the client closes).

        Consumed from the moment it is declared, so the broker never expires it while the client is
        connected, however long a `wait` comes after its `send`. Not exclusive, so it outlives a
        dropped connection: after a reconnect the same queue is declared and consumed again and the
        outcomes that arrived meanwhile are still in it. Its name is random; without a consumer for
        `broker.reply_queue_expires_s` (a client that died without closing) the broker deletes it.
        """
        return self._consume_replies()

    def _consume_replies(self) -> str:
        """Declare and consume the reply queue on the current channel (again after a reconnect)."""
        channel = self._publisher.channel
        if self._reply_queue is None or self._reply_channel is not channel:
            name = self._reply_queue or f"{REPLY_QUEUE_PREFIX}{uuid.uuid4().hex}"
            expires_ms = int(self.settings.broker.reply_queue_expires_s * 1000)
            channel.queue_declare(name, durable=False, exclusive=False, auto_delete=False,
                                  arguments={"x-expires": expires_ms, "x-queue-type": "classic"})
            # Deliveries wait in pika until `_receive` dispatches them to `_on_reply`.
            channel.basic_consume(name, self._on_reply)
            self._reply_queue = name
            self._reply_channel = channel
        return self._reply_queue

    def send(self, data: Request, *, correlation_id: str | None = None) -> CloudEvent[Any]:
        """Publish a request whose outcome comes back to this client's reply queue."""
        data = data.model_copy(update={"reply_to": self.reply_queue})
        return self.publish(data, correlation_id=correlation_id)

    def wait(
        self,
        request: CloudEvent[Any],
        *,
        timeout: float,
        on_event: Callable[[CloudEvent[Any]], None] | None = None,
    ) -> CloudEvent[Any]:
        """Wait for the outcome event caused by `request`; raise RequestFailed on a `*Failed` one.

        Events for other requests of this client that arrive meanwhile are kept for their own `wait`.
        `on_event` sees every non-final event caused by the request (progress, for instance).
        """
        outcomes = OUTCOMES[type(request.data)]
        deadline = time.monotonic() + timeout
        while True:
            for event in self._take(request.id):
                if isinstance(event.data, outcomes):
                    if isinstance(event.data, Failure):
                        raise RequestFailed(event)
                    return event
                if on_event is not None:
                    on_event(event)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplyTimeout(
                    f"no outcome for {request.data.__class__.__name__} {request.id} within {timeout:g}s"
                )
            self._receive(min(remaining, 1.0))

    def request(self, data: Request, *, timeout: float,
                on_event: Callable[[CloudEvent[Any]], None] | None = None) -> CloudEvent[Any]:
        """`send` then `wait`: the blocking call of the platform SDK, over events."""
        return self.wait(self.send(data), timeout=timeout, on_event=on_event)

    def _take(self, request_id: str) -> list[CloudEvent[Any]]:
        return self._early.pop(request_id, [])

    def _receive(self, timeout: float) -> None:
        """Dispatch the replies that have arrived, waiting up to `timeout` for the first one."""
        self._consume_replies()
        try:
            self._publisher.channel.connection.process_data_events(time_limit=timeout)
        except (pe.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"lost the reply queue: {exc}") from exc

    def _on_reply(self, channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        self._keep(body)
        # Acked once kept: a reply in transit when the connection drops stays in the queue.
        channel.basic_ack(method.delivery_tag)

    def _keep(self, body: bytes) -> None:
        try:
            event = decode(body, max_bytes=self.settings.max_event_bytes)
        except EventDecodeError:
            return  # replies are produced by modelbus workers; anything else is not ours to read
        if event.causationid:
            self._early.setdefault(event.causationid, []).append(event)

    # -- deploy -----------------------------------------------------------------------------------
    def deploy(self, service: str, *, path: str, wait: bool = True, timeout: float = 900.0,
               **fields: Any) -> Service | CloudEvent[Any]:
        """Serve a model (platform: `new_function(kind="huggingfaceserve", ...).run("serve")`).

        Args:
            service: DNS-1123 name of the service.
            path: model URI (`huggingface://org/name`, `s3://...`, `store://project/model/name`).
            wait: block until ServiceReady; otherwise return the published request envelope.
            fields: the other DeployRequested fields (model_name, task, profile, replicas, runtime,
                envs, secret_refs, labels, backend, deadline).

        Returns:
            the ready `Service` (wait=True) or the request envelope (wait=False).

        Raises:
            RequestFailed: with the DeployFailed reason (e.g. `UnknownProfile`).
            ReplyTimeout: nothing came back in time.
        """
        data = DeployRequested(service=service, path=path, **fields)
        if not wait:
            return self.send(data)
        ready = self.request(data, timeout=timeout)
        return Service(self, ready.data)

    def undeploy(self, service: str, *, wait: bool = True, timeout: float = 300.0) -> CloudEvent[Any]:
        """Stop and delete a service; returns ServiceDeleted (wait=True) or the request envelope."""
        data = UndeployRequested(service=service)
        return self.request(data, timeout=timeout) if wait else self.send(data)

    # -- train ------------------------------------------------------------------------------------
    def train(self, name: str, *, base_model: str, dataset: str | dict[str, Any] | None = None, wait: bool = True,
              timeout: float = 3600.0, on_progress: Callable[[TrainProgress], None] | None = None,
              **fields: Any) -> LoggedModel | CloudEvent[Any]:
        """Fine-tune a model and log it (platform: a python job that calls `log_model(kind="huggingface")`).

        Args:
            name: the model's name in the registry (DNS-1123).
            base_model: `huggingface://org/name`, `file:///dir`, `s3://bucket/dir/` or `store://project/model/name`.
            dataset: a dataset URI (file://, s3://, hf://) or a full DatasetSpec dict (columns, split, ...).
            wait: block until ModelLogged; otherwise return the published request envelope.
            on_progress: called with each TrainProgress (epoch, step, loss) while waiting.
            fields: the other TrainRequested fields (task, labels, hyperparameters, code, profile, project,
                envs, secret_refs, timeout_s, deploy, deadline).

        Returns:
            the `LoggedModel` (wait=True) or the request envelope (wait=False).

        Raises:
            RequestFailed: with the TrainFailed reason (e.g. `UnknownColumn`); `.event.data.log_tail` has the log.
            ReplyTimeout: nothing came back in time.
        """
        from producers.trained import LoggedModel

        spec = {"uri": dataset} if isinstance(dataset, str) else dataset
        data = TrainRequested(name=name, base_model=base_model, dataset=spec, **fields)
        request = self.send(data)
        if not wait:
            return request

        def progress(event: CloudEvent[Any]) -> None:
            if on_progress is not None and isinstance(event.data, TrainProgress):
                on_progress(event.data)

        logged = self.wait(request, timeout=timeout, on_event=progress)
        return LoggedModel(self, logged, request)

    # -- invoke -----------------------------------------------------------------------------------
    def invoke(self, service: str | None, *, json: dict[str, Any], protocol: str | InvokeProtocol | None = None,
               timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        """Call a served model through the invoke worker and return its response body.

        The platform SDK's `run.invoke(json=...)`, over events: an `InvokeRequested` goes out, this
        client's reply queue receives the `InvokeCompleted` (micro-batched with other callers' requests
        on the way).

        Args:
            service: the service name (or None with `url=` for an explicit server base URL).
            json: the protocol's request body, e.g. `{"inputs": [{"name": "input-0", ...}]}` (v2),
                `{"model": "m", "prompt": "..."}` (completions), `{"model": "m", "messages": [...]}` (chat).
            protocol: `v2`, `v1`, `openai.completions`, `openai.chat` or `openai.embeddings`;
                guessed from the body when omitted (see `guess_protocol`).
            fields: other InvokeRequested fields (url, model_name, deadline, batch_id, custom_id).

        Returns:
            the model server's JSON response for this request.

        Raises:
            RequestFailed: an `InvokeFailed` came back (`reason` e.g. UnknownService, UpstreamError).
            ReplyTimeout: nothing came back within `timeout` seconds.

        Example:
            >>> bus.invoke("sentiment", json={"instances": ["I love it"]}, protocol="v1")  # doctest: +SKIP
            {'predictions': [1]}
        """
        chosen = InvokeProtocol(protocol) if protocol is not None else guess_protocol(json)
        data = InvokeRequested(service=service, protocol=chosen, body=json, **fields)
        outcome = self.request(data, timeout=timeout)
        body: dict[str, Any] = outcome.data.body
        return body

    # -- batch ------------------------------------------------------------------------------------
    def batch(self, file: Any = None, *, batch_id: str | None = None, **options: Any) -> Any:
        """Submit a JSONL batch (OpenAI batch lines or plain bodies), or re-open one by `batch_id`.

        Args:
            file: path of the JSONL file, or its lines.
            batch_id: an existing batch of this state directory (then no other argument).
            options: `service=` or `url=`, and `endpoint`, `completion_window` ("24h"), `metadata`,
                `skip_invalid`, `max_in_flight`, `wait`, `timeout`, `on_progress`
                (see `producers.batch.submit_batch`).

        Returns:
            a `producers.batch.Batch` with `status()`, `wait()`, `results(out, errors)`, `cancel()`.

        Raises:
            InvalidBatch: invalid lines, reported with line numbers; nothing was sent.

        Example:
            >>> batch = bus.batch("prompts.jsonl", service="writer", wait=True)  # doctest: +SKIP
            >>> batch.results("out.jsonl", errors="errors.jsonl")
        """
        from producers.batch import Batch, submit_batch

        if batch_id is not None:
            return Batch(self.settings, batch_id)
        return submit_batch(self.settings, file, **options)


def guess_protocol(body: dict[str, Any]) -> InvokeProtocol:
    """The protocol a request body is written in: `messages` -> chat, `prompt` -> completions,
    `input` -> embeddings, `instances` (or `inputs` of plain values) -> v1, `inputs` of tensors -> v2."""
    if "messages" in body:
        return InvokeProtocol.openai_chat
    if "prompt" in body:
        return InvokeProtocol.openai_completions
    if "input" in body:
        return InvokeProtocol.openai_embeddings
    inputs = body.get("inputs")
    if "instances" in body or (isinstance(inputs, list) and inputs and not isinstance(inputs[0], dict)):
        return InvokeProtocol.v1
    return InvokeProtocol.v2


class Service:
    """A ready service, as announced by its ServiceReady event."""

    def __init__(self, bus: ModelBus, ready: ServiceReady) -> None:
        self.bus = bus
        self.ready = ready

    @property
    def name(self) -> str:
        return self.ready.service

    @property
    def url(self) -> str:
        return self.ready.url

    def invoke(self, *, json: dict[str, Any], protocol: str | InvokeProtocol | None = None,
               timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        """Call this service (platform: `run.invoke(json=...)`); see `ModelBus.invoke`."""
        return self.bus.invoke(self.name, json=json, protocol=protocol, timeout=timeout, **fields)

    def __repr__(self) -> str:
        return f"Service({self.name!r}, url={self.url!r}, task={self.ready.task})"
