"""`/api` routes: version, tags, show, ps, generate, chat (NDJSON streaming, `{"error": "…"}` errors), embed and
embeddings."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from faisca.api.body import read_json_object, read_request
from faisca.api.openapi import card_for_any_model, request_body
from faisca.api.errors import ollama_error_body
from faisca.api.ollama import convert
from faisca.api.ollama.embeddings import embed_response_json, embeddings_response_json, from_embed, from_embeddings
from faisca.api.ollama.protocol import OLLAMA_API_VERSION
from faisca.api.streaming import as_faisca_error, dumps, unless_disconnected
from faisca.catalog import ModelCard
from faisca.catalog.embedding_schema import BodyValidator, ollama_embed_schema, ollama_embeddings_schema
from faisca.catalog.ollama_schema import chat_schema, generate_schema, validators
from faisca.config import Settings
from faisca.engine.weights import resolve_gguf
from faisca.errors import FaiscaError, InvalidRequest, ModelNotFound
from faisca.lifecycle.keep_alive import parse_keep_alive
from faisca.registry import ServedModel
from faisca.service import ChatService
from faisca.types import ChatRequest, EmbeddingRequest


_FOREVER_S = (2**63 - 1) // 10**9  # ~292 years
_SHOW_SCHEMA = {"type": "object", "properties": {"model": {"type": "string"}, "name": {"type": "string"}}}


def build_router(service: ChatService, settings: Settings, *, started_at: int) -> APIRouter:
    router = APIRouter(prefix="/api")
    modified_at = datetime.fromtimestamp(started_at, timezone.utc).isoformat().replace("+00:00", "Z")

    def resolve_named(body: Mapping[str, Any]) -> tuple[ModelCard, str | None]:
        """The card the body's model names, and the LoRA adapter when it names one."""
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("model is required", param="model")
        try:
            return service.resolve_model(name)
        except ModelNotFound:
            if name.endswith(":latest"):
                return service.resolve_model(name.removesuffix(":latest"))
            raise ModelNotFound(f"model '{name}' not found", param="model") from None

    def resolve(body: Mapping[str, Any]) -> ModelCard:
        return resolve_named(body)[0]

    def metadata(card: ModelCard) -> Mapping[str, str]:
        served = next((m for m in service.registry.ready_models() if m.card.id == card.id), None)
        return served.metadata if served else {}

    def listing(card: ModelCard) -> dict[str, Any]:
        try:
            size = resolve_gguf(card).stat().st_size
        except (FaiscaError, OSError):
            size = 0
        digest = hashlib.sha256(f"{card.id}:{card.version}:{size}".encode()).hexdigest()
        name = convert.model_name(card)
        return {"name": name, "model": name, "modified_at": modified_at, "size": size, "digest": digest,
                "details": convert.model_details(card, metadata(card))}

    @router.get("/version")
    async def version() -> dict[str, str]:
        return {"version": OLLAMA_API_VERSION}

    def adapter_listings() -> list[dict[str, Any]]:
        """The served models' LoRA adapters, each listed as a model of its base's family."""
        return [{**listing(served.card), "name": info.name, "model": info.name,
                 "digest": hashlib.sha256(f"{served.card.id}:lora:{info.id}:{info.path}".encode()).hexdigest(),
                 "details": {**convert.model_details(served.card, metadata(served.card)),
                             "parent_model": convert.model_name(served.card)}}
                for served in service.registry.ready_models() if isinstance(served, ServedModel)
                for info in served.engine.lora_adapters]

    @router.get("/tags")
    async def tags() -> dict[str, Any]:
        return {"models": [*(listing(card) for card in service.registry.served_cards), *adapter_listings()]}

    @router.get("/ps")
    async def running_models() -> dict[str, Any]:
        """The models in memory: their size (weights, KV cache, projector) and when they leave if still idle."""
        return {"models": [
            {**listing(resident.served.card), "size": resident.num_bytes, "expires_at": _expiry(resident.expires_at),
             "size_vram": 0, "context_length": resident.served.max_context_tokens}
            for resident in service.registry.residents()
        ]}

    @router.post("/show", openapi_extra=request_body(_SHOW_SCHEMA, model_ids=None))
    async def show(request: Request) -> dict[str, Any]:
        card = resolve(await read_json_object(request, max_bytes=settings.max_body_bytes))
        details = convert.model_details(card, metadata(card))
        return {
            "license": card.license,
            "modelfile": f"# faisca model card {card.id}\nFROM {card.hf_id}\n",
            "parameters": "",
            "template": "",
            "details": details,
            "model_info": {
                "general.architecture": details["family"],
                "general.basename": card.name,
                f"{details['family']}.context_length": card.context_length,
            },
            "capabilities": convert.capabilities(card),
            "modified_at": modified_at,
        }

    def parse(body: dict[str, Any], *, chat: bool) -> tuple[dict[str, Any], ModelCard, ChatRequest | float | None]:
        """The body's card and request, validated against the card's schema; for a body with nothing to answer (no
        prompt, no messages), which only loads or unloads the model, its keep_alive instead."""
        card, adapter = resolve_named(body)
        if chat and not body.get("messages") or not chat and not body.get("prompt") and not body.get("raw") \
                and not body.get("images"):
            (validators(card).chat if chat else validators(card).generate).validate(body)
            return body, card, parse_keep_alive(body.get("keep_alive"))
        request = convert.from_chat(body, card) if chat else convert.from_generate(body, card)
        return body, card, dataclasses.replace(request, adapter=adapter)

    async def load_or_unload(card: ModelCard, keep_alive_s: float | None, name: str, *, chat: bool) -> JSONResponse:
        """As Ollama answers an empty request: the model loaded (`done_reason: "load"`), or with `keep_alive: 0`,
        unloaded (`"unload"`)."""
        if keep_alive_s == 0:
            await service.registry.unload(card)
            done_reason = "unload"
        else:
            (await service.registry.acquire(card, keep_alive_s)).release()
            done_reason = "load"
        answer: dict[str, Any] = {"model": name, "created_at": convert.now_iso()}
        answer |= {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
        return JSONResponse({**answer, "done_reason": done_reason, "done": True})

    async def answer(request: Request, *, chat: bool) -> JSONResponse | StreamingResponse:
        body, card, chat_request = await read_request(request, max_bytes=settings.max_body_bytes,
                                                      parse=functools.partial(parse, chat=chat))
        name = body["model"] if isinstance(body.get("model"), str) else convert.model_name(card)
        if not isinstance(chat_request, ChatRequest):
            return await load_or_unload(card, chat_request, name, chat=chat)
        lines = convert.to_lines(await service.start_chat(chat_request), model=name, chat=chat)
        if body.get("stream", True) is not False:
            return StreamingResponse(_ndjson(lines), media_type="application/x-ndjson")
        return JSONResponse(convert.fold_lines(await unless_disconnected(request, _collect(lines)), chat=chat))

    openapi_card = card_for_any_model(service.registry.served_cards or list(service.catalog))
    models = [card.id for card in service.registry.served_cards]

    @router.post("/generate", response_model=None,
                 openapi_extra=request_body(generate_schema(openapi_card), model_ids=models))
    async def generate(request: Request) -> JSONResponse | StreamingResponse:
        return await answer(request, chat=False)

    @router.post("/chat", response_model=None, openapi_extra=request_body(chat_schema(openapi_card), model_ids=models))
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        return await answer(request, chat=True)

    @router.get("/schema/{kind}")
    async def schema(kind: Literal["chat", "generate"], model: str) -> JSONResponse:
        """The draft-07 JSON Schema `/api/chat` or `/api/generate` bodies for `model` are validated against."""
        card = resolve({"model": model})
        return JSONResponse(validators(card).chat.schema if kind == "chat" else validators(card).generate.schema)

    embed_validator = BodyValidator(ollama_embed_schema())
    embeddings_validator = BodyValidator(ollama_embeddings_schema())

    def parse_embed(body: dict[str, Any], *, legacy: bool) -> tuple[str, EmbeddingRequest]:
        (embeddings_validator if legacy else embed_validator).validate(body)
        card = resolve(body)
        return body["model"], (from_embeddings if legacy else from_embed)(body, card.id)

    @router.post("/embed", response_model=None, openapi_extra=request_body(ollama_embed_schema(), model_ids=models))
    async def embed(request: Request) -> Response:
        started_ns = time.monotonic_ns()
        model, embedding_request = await read_request(request, max_bytes=settings.max_body_bytes,
                                                      parse=functools.partial(parse_embed, legacy=False))
        result = await unless_disconnected(request, service.embed(embedding_request))
        content = await service.in_worker(
            lambda: embed_response_json(result, model=model, duration_ns=time.monotonic_ns() - started_ns))
        return Response(content, media_type="application/json")

    @router.post("/embeddings", response_model=None,
                 openapi_extra=request_body(ollama_embeddings_schema(), model_ids=models))
    async def embeddings(request: Request) -> Response:
        _, embedding_request = await read_request(request, max_bytes=settings.max_body_bytes,
                                                  parse=functools.partial(parse_embed, legacy=True))
        result = await unless_disconnected(request, service.embed(embedding_request))
        return Response(await service.in_worker(lambda: embeddings_response_json(result)), media_type="application/json")

    return router


def _expiry(expires_at: float | None) -> str:
    """RFC 3339, as Ollama writes it; forever is as far as Ollama's own (Go's longest duration from now)."""
    moment = datetime.fromtimestamp(expires_at, timezone.utc) if expires_at is not None else \
        datetime.now(timezone.utc) + timedelta(seconds=_FOREVER_S)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


async def _collect(lines: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line async for line in lines]


async def _ndjson(lines: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """One JSON object per line; an error after the first line is one in-band `{"error": …}` line."""
    try:
        async for line in lines:
            yield dumps(line) + "\n"
    except Exception as exc:  # the status line is gone: report in band
        yield dumps(ollama_error_body(as_faisca_error(exc))) + "\n"
