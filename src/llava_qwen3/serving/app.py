"""The FastAPI app: `create_app(backend, limits, options)` wires the routes, the error handlers, the body-size limit,
the metrics and the batching worker (started and stopped with the app) around one `InferenceBackend`.

Routes: `/v1/chat/completions` and `/v1/models` (openai_routes), `/caption`, `/question` and `/chat` (rest_routes),
`/health`, `/metrics`, the web page at `/`, and FastAPI's own `/openapi.json` and `/docs`. The API key, when set,
guards the model's endpoints; `/health`, `/metrics` and the page stay open (the page asks for the key).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from .. import __version__
from ..inference import InferenceBackend
from . import openai_routes, rest_routes
from .dependencies import ServiceDependency
from .errors import install_error_handlers
from .limits import ServerLimits
from .middleware import BodySizeLimit, RequestMetrics
from .rest_schema import Health
from .service import ClientDisconnected, ServerOptions, Service

PAGE = files(__package__).joinpath("static/index.html")


def create_app(
    backend: InferenceBackend, limits: ServerLimits | None = None, options: ServerOptions | None = None
) -> FastAPI:
    """The server's app over `backend` (a loaded `InferenceBackend`), with `limits` (defaults: `ServerLimits()`) and
    `options` (the served model name, the optional API key, the caption prompt)."""
    service = Service(backend, limits or ServerLimits(), options or ServerOptions(model_name="llava-qwen3"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        yield
        service.batcher.stop()
        service.prompts.close()

    app = FastAPI(
        title="LLaVA-Qwen3 server",
        version=__version__,
        description="Captions, questions and chats about images, and OpenAI's chat completions API, over one model.",
        lifespan=lifespan,
    )
    app.state.service = service
    install_error_handlers(app)

    @app.exception_handler(ClientDisconnected)
    async def _gone(request: Request, error: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nobody reads this answer; it only closes the request's books

    app.add_middleware(BodySizeLimit, max_bytes=service.limits.max_request_bytes)
    app.add_middleware(RequestMetrics, metrics=service.metrics)  # added last: outermost, so it sees every answer
    app.include_router(openai_routes.router)
    app.include_router(rest_routes.router)

    @app.get("/health", tags=["operations"], responses={503: {"model": Health}})
    async def health(service: ServiceDependency) -> JSONResponse:
        """Whether the model is loaded and its worker runs (else 503), where it runs, and how many requests wait or
        decode."""
        running = service.batcher.running
        state = Health(
            status="ok" if running else "unavailable",
            model=service.options.model_name,
            model_loaded=True,  # the app is made around a loaded backend
            backend=service.backend.name,
            device=service.backend.device,
            queue_depth=service.batcher.queue_depth,
            decoding=service.batcher.decoding,
        )
        return JSONResponse(state.model_dump(), status_code=200 if running else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(service: ServiceDependency) -> Response:
        """Prometheus metrics: requests, latency, tokens, batch sizes, queue depth."""
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    page_html = PAGE.read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    return app
