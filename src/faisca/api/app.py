"""The ASGI application: one port, the OpenAI surface under /v1, the Ollama one under /api, health, root and the chat
page (/ui).

Middleware, outermost first: response counting, the drain (503 once shutting down), the API key (every route but
`/health`, `GET|HEAD /` and the page's own files under `/ui`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faisca import __version__
from faisca.api.auth import ApiKeys, RequireApiKey
from faisca.api.drain import RETRY_AFTER_S, Drain, RefuseWhileDraining
from faisca.api.lora import build_router as build_lora_router
from faisca.api.errors import error_response, install_error_handlers
from faisca.api.ollama.routes import build_router as build_ollama_router
from faisca.api.openai.routes import build_router as build_openai_router
from faisca.api.page import build_router as build_page_router
from faisca.api.tokens import build_router as build_tokens_router
from faisca.config import Settings
from faisca.errors import NotReady
from faisca.images import AddressPolicy, ImageLimits, ImageLoader, SafeFetcher
from faisca.metrics import Metrics
from faisca.registry import ModelRegistry
from faisca.scheduler.admission import AdmissionLimits
from faisca.service import ChatService


class _CountResponses:
    """Counts responses by status. Plain ASGI: Starlette's BaseHTTPMiddleware would hide client disconnects."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            return await self._app(scope, receive, send)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._metrics.requests.labels(str(message["status"])).inc()
            await send(message)

        await self._app(scope, receive, counting_send)


def create_app(settings: Settings, registry: ModelRegistry, *, drain: Drain | None = None) -> FastAPI:
    """The app; `drain` is shared with the process that starts it on SIGTERM (`faisca.cli.server`)."""
    drain = drain or Drain()

    def queue_lengths() -> dict[str, tuple[int, int]]:
        stats = {served.card.id: served.stats for served in registry.ready_models()}  # one snapshot each
        return {model: (stat.num_running, stat.num_waiting) for model, stat in stats.items()}

    def speculation() -> dict[str, tuple[int, int]]:
        stats = {served.card.id: served.stats for served in registry.ready_models()}
        return {model: (stat.num_draft_tokens, stat.num_accepted_tokens) for model, stat in stats.items()
                if stat.num_draft_tokens}

    metrics = Metrics(queue_lengths, registry.replica_stats, registry.residents, speculation)
    registry.listener = metrics
    limits = AdmissionLimits(max_running=settings.max_num_seqs, max_waiting=settings.max_queue)
    image_limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                               fetch_timeout_s=settings.image_fetch_timeout_s,
                               max_per_request=settings.max_images_per_request)
    image_fetcher = SafeFetcher(image_limits.fetch, policy=AddressPolicy(settings.image_allowed_networks))
    images = ImageLoader(image_limits, fetcher=image_fetcher)
    service = ChatService(registry, limits=limits, metrics=metrics, images=images)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(registry.load_all())
        try:
            yield
        finally:
            loading.cancel()
            await service.aclose()
            await registry.close()

    docs = settings.enable_docs  # /docs, /redoc and /openapi.json: off unless asked for; they need the key too
    app = FastAPI(title="faisca", version=__version__, lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    install_error_handlers(app)
    started_at = int(time.time())
    app.include_router(build_openai_router(service, settings, started_at=started_at))
    app.include_router(build_ollama_router(service, settings, started_at=started_at))
    app.include_router(build_lora_router(service, settings))
    app.include_router(build_tokens_router(service, settings))
    app.include_router(build_page_router())  # `GET|HEAD /` (text for clients, the chat page for browsers) and /ui

    # add_middleware puts each one outside the ones before it
    if settings.api_keys:
        app.add_middleware(RequireApiKey, keys=ApiKeys(settings.api_keys))
    app.add_middleware(RefuseWhileDraining, drain=drain)
    app.add_middleware(_CountResponses, metrics=metrics)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health", response_model=None)
    async def health() -> JSONResponse:
        """200 when every model named at start is ready (models loaded on demand may be unloaded, loading or in memory);
        503 while draining, loading those, or when one failed or an engine died."""
        states = registry.states()
        if drain.is_draining:
            return JSONResponse({"status": "draining", "models": states}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        if registry.is_loading:
            loading = [card.id for card in registry.pinned_cards if states.get(card.id) == "loading"]
            return error_response(NotReady(f"Loading: {', '.join(loading)}.", retry_after_s=2))
        if any(state.startswith("failed") for state in states.values()):
            return JSONResponse({"status": "failed", "models": states}, status_code=503)
        return JSONResponse({"status": "ok", "models": states})

    return app

