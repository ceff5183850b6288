"""The HTTP app: KServe's v1/v2 and health routes, ``/metrics``, error mapping, request metrics.

``create_app`` wires a ``ModelService`` into FastAPI; the OpenAI routes live in
``openai_routes.py``. Every ``ServingError`` becomes its status code with a JSON message
(``{"error": "..."}`` like KServe, or OpenAI's error object on the OpenAI routes); anything
unexpected becomes a 500 with the exception's type and message, logged server side, never a
traceback in the response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import protocol
from serving.errors import ModelNotFound, NotImplementedFeature, ServingError
from serving.metrics import ServingMetrics
from serving.openai_routes import register_openai_routes
from serving.service import ModelService

log = logging.getLogger("serving")

SERVER_NAME = "modelbus-serving"


class MetricsMiddleware:
    """Counts requests by route template and status, and times them until the response is complete.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs a task and a stream per
    request, which shows at thousands of small requests per second.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
            if endpoint != "/metrics":
                self.metrics.observe_request(endpoint, status, time.perf_counter() - started)


def json_response(payload: Any, status_code: int = 200) -> Response:
    return Response(content=protocol.dumps(payload), status_code=status_code, media_type="application/json")


async def read_json(request: Request) -> Any:
    return protocol.parse_json(await request.body())


def create_app(service: ModelService, *, metrics: ServingMetrics, openai_prefix: str = "/openai") -> FastAPI:
    """Build the app serving ``service``.

    Args:
        service: the loaded model behind its batcher.
        metrics: the metric families ``/metrics`` exposes.
        openai_prefix: where the OpenAI routes live (KServe default ``/openai``; "" for none).

    Example:
        >>> app = create_app(service, metrics=ServingMetrics("m"))  # doctest: +SKIP
        >>> uvicorn.run(app, port=8080)  # doctest: +SKIP
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await service.close()

    app = FastAPI(title=SERVER_NAME, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    openai_root = f"{openai_prefix}/v1"

    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> Response:
        if exc.status_code >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
        if request.url.path.startswith(openai_root) and not isinstance(exc, ModelNotFound):
            return json_response(protocol.openai_error(exc.message, exc.status_code), exc.status_code)
        return json_response({"error": exc.message}, exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response({"error": f"{type(exc).__name__} : {exc}"}, 500)

    _register_kserve_routes(app, service=service, metrics=metrics)
    register_openai_routes(app, service=service, root=openai_root, read_json=read_json,
                           json_response=json_response)
    return app


async def v2_infer(name: str, payload: Any, *, service: ModelService) -> dict[str, Any]:
    """``POST /v2/models/{name}/infer``: texts in ``inputs[0]``, predictions in ``output-0``."""
    check_model(name, service)
    body = protocol.validate(protocol.V2Request, payload)
    result = await service.predict(protocol.texts_from_v2(body))
    return protocol.v2_response(model_name=name, request_id=body.id, predictions=result.predictions)


async def v1_predict(name: str, payload: Any, *, service: ModelService) -> dict[str, Any]:
    """``POST /v1/models/{name}:predict``: ``{"instances": [...]}`` -> ``{"predictions": [...]}``."""
    check_model(name, service)
    body = protocol.validate(protocol.V1Request, payload)
    result = await service.predict(protocol.texts_from_v1(body))
    return protocol.v1_response(result.predictions)


def check_model(name: str, service: ModelService) -> None:
    """404 unless ``name`` is the served model."""
    if name != service.name:
        raise ModelNotFound(name)


def _register_kserve_routes(app: FastAPI, *, service: ModelService, metrics: ServingMetrics) -> None:
    @app.get("/")
    async def root() -> Response:
        return json_response({"status": "alive"})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(content=metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return json_response({"name": SERVER_NAME, "version": _version(), "extensions": []})

    @app.get("/v2/health/live")
    async def live() -> Response:
        return json_response({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        # The model loads before the server listens, so a server that answers is ready.
        return json_response({"ready": True})

    @app.get("/v1/models")
    @app.get("/v2/models")
    async def list_models() -> Response:
        return json_response({"models": [service.name]})

    @app.get("/v1/models/{name}")
    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        check_model(name, service)
        return json_response({"name": name, "ready": True})

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> Response:
        check_model(name, service)
        return json_response({"name": name, "versions": None, "platform": "", "inputs": [], "outputs": []})

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        return json_response(await v2_infer(name, await read_json(request), service=service))

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, request: Request) -> Response:
        return json_response(await v1_predict(name, await read_json(request), service=service))

    @app.api_route("/v2/models/{name}/versions/{version}", methods=["GET"])
    @app.api_route("/v2/models/{name}/versions/{version}/ready", methods=["GET"])
    @app.api_route("/v2/models/{name}/versions/{version}/infer", methods=["POST"])
    async def versions(name: str, version: str) -> Response:
        check_model(name, service)
        raise NotImplementedFeature("Model versioning is not supported.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelbus")
    except PackageNotFoundError:
        return "0.0.0"
