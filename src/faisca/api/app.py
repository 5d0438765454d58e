"""The ASGI application: one port, the OpenAI surface under /v1, health and root."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from faisca import __version__
from faisca.api.errors import error_response, install_error_handlers
from faisca.api.openai.routes import build_router as build_openai_router
from faisca.config import Settings
from faisca.errors import NotReady
from faisca.registry import ModelRegistry
from faisca.service import ChatService


def create_app(settings: Settings, registry: ModelRegistry) -> FastAPI:
    service = ChatService(registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(registry.load_all())
        try:
            yield
        finally:
            loading.cancel()
            await registry.close()

    app = FastAPI(title="faisca", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(build_openai_router(service, settings, started_at=int(time.time())))

    @app.get("/health", response_model=None)
    async def health() -> JSONResponse:
        states = registry.states()
        if registry.is_loading:
            loading = [card_id for card_id, state in states.items() if state == "loading"]
            return error_response(NotReady(f"Loading: {', '.join(loading)}.", retry_after_s=2))
        return JSONResponse({"status": "ok", "models": states})

    @app.api_route("/", methods=["GET", "HEAD"])
    async def root() -> PlainTextResponse:
        return PlainTextResponse("faisca is running")

    return app

