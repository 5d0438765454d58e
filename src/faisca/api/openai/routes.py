"""`/v1` routes: models, per-model schemas, chat completions, (legacy) completions, embeddings."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from faisca.api.errors import openai_error_body
from faisca.api.openai import completions, convert
from faisca.api.openai.embeddings import embedding_response_json, to_embedding_request
from faisca.api.openai.protocol import ModelList, ModelObject
from faisca.api.streaming import dumps, sse_frames, unless_disconnected
from faisca.api.body import read_request
from faisca.api.openapi import card_for_any_model, request_body
from faisca.catalog import ModelCard
from faisca.catalog.embedding_schema import BodyValidator, openai_embeddings_schema
from faisca.catalog.schema import RequestValidator, completion_request_schema, request_schema
from faisca.config import Settings
from faisca.errors import InvalidRequest
from faisca.registry import ServedModel
from faisca.service import ChatService, fold_chat
from faisca.types import ChatRequest, EmbeddingRequest


def _requested_card(service: ChatService, body: Mapping[str, object]) -> tuple[ModelCard, str | None]:
    """The card the body's `model` names, and the LoRA adapter when it names one."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` is required: the id of a model (see GET /v1/models).", param="model")
    return service.resolve_model(model)


def _event_stream(payloads: AsyncIterator[str]) -> StreamingResponse:
    """Server-sent events, `data: [DONE]` last; an error after the first byte is one in-band error event."""
    return StreamingResponse(
        sse_frames(payloads, error_payload=lambda exc: dumps(openai_error_body(exc))),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def build_router(service: ChatService, settings: Settings, *, started_at: int) -> APIRouter:
    router = APIRouter(prefix="/v1")  # the API key is checked for every route by faisca.api.auth
    validators = {card.id: RequestValidator(card) for card in service.catalog}
    completion_validators = {card.id: RequestValidator(card, completion_request_schema(card)) for card in service.catalog}

    def model_object(card: ModelCard) -> ModelObject:
        return ModelObject(id=card.id, created=started_at, root=card.hf_id,
                           max_model_len=service.registry.max_context_tokens(card))

    def adapter_objects() -> list[ModelObject]:
        """The LoRA adapters of the served models, each a model whose `parent` is its base."""
        return [ModelObject(id=info.name, created=started_at, root=str(info.path), parent=served.card.id,
                            max_model_len=served.max_context_tokens)
                for served in service.registry.ready_models() if isinstance(served, ServedModel)
                for info in served.engine.lora_adapters]

    @router.get("/models")
    async def list_models() -> ModelList:
        return ModelList(data=[*(model_object(card) for card in service.catalog), *adapter_objects()])

    @router.get("/models/{model_id:path}/schema")
    async def model_schema(model_id: str) -> JSONResponse:
        return JSONResponse(validators[service.resolve_model(model_id)[0].id].schema)

    @router.get("/models/{model_id:path}")
    async def model_card(model_id: str) -> dict[str, object]:
        card, adapter = service.resolve_model(model_id)
        card_fields = card.model_dump(mode="json", exclude={"runtime", "id"})
        listed = next((entry for entry in adapter_objects() if entry.id == adapter), None) or model_object(card)
        return {**card_fields, **listed.model_dump(), "served": service.registry.is_served(card)}

    def parse_chat(wire: dict[str, Any]) -> tuple[dict[str, Any], str, ChatRequest]:
        body = convert.without_null_message_fields(wire)
        card, adapter = _requested_card(service, body)
        validators[card.id].validate(body)
        return body, adapter or card.id, dataclasses.replace(convert.to_chat_request(body, card), adapter=adapter)

    def parse_completion(body: dict[str, Any]) -> tuple[dict[str, Any], str, ChatRequest]:
        card, adapter = _requested_card(service, body)
        completion_validators[card.id].validate(body)
        return body, adapter or card.id, dataclasses.replace(completions.to_completion_request(body, card),
                                                             adapter=adapter)

    openapi_card = card_for_any_model(service.registry.served_cards or list(service.catalog))
    models = [card.id for card in service.registry.served_cards]

    @router.post("/chat/completions", response_model=None,
                 openapi_extra=request_body(request_schema(openapi_card), model_ids=models))
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        body, model, chat_request = await read_request(request, max_bytes=settings.max_body_bytes, parse=parse_chat)
        events = await service.start_chat(chat_request)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.get("stream"):
            stream_options = body.get("stream_options") or {}
            include_usage = bool(stream_options.get("include_usage"))  # type: ignore[union-attr]
            chunks = convert.to_chunks(
                events,
                completion_id=completion_id,
                created=created,
                model=model,
                num_choices=chat_request.num_choices,
                include_usage=include_usage,
            )
            # with include_usage every chunk carries `usage` (null but on the last), as OpenAI sends it
            payloads = (chunk.model_dump_json(exclude=None if include_usage else {"usage"}) async for chunk in chunks)
            return _event_stream(payloads)
        result = await unless_disconnected(request, fold_chat(events))
        completion = convert.to_chat_completion(result, completion_id=completion_id, created=created, model=model)
        return JSONResponse(completion.model_dump(mode="json"))

    @router.post("/completions", response_model=None,
                 openapi_extra=request_body(completion_request_schema(openapi_card), model_ids=models))
    async def text_completions(request: Request) -> JSONResponse | StreamingResponse:
        body, model, completion_request = await read_request(request, max_bytes=settings.max_body_bytes,
                                                             parse=parse_completion)
        echo = (completion_request.raw_prompt or "") if body.get("echo") else ""
        events = await service.start_chat(completion_request)
        completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))  # type: ignore[union-attr]
            chunks = completions.to_completion_chunks(
                events, completion_id=completion_id, created=created, model=model, echo=echo,
                num_choices=completion_request.num_choices, include_usage=include_usage,
            )
            payloads = (chunk.model_dump_json(exclude=None if include_usage else {"usage"}) async for chunk in chunks)
            return _event_stream(payloads)
        result = await unless_disconnected(request, fold_chat(events))
        completion = completions.to_completion(result, completion_id=completion_id, created=created, model=model,
                                               echo=echo)
        return JSONResponse(completion.model_dump(mode="json"))

    embeddings_validator = BodyValidator(openai_embeddings_schema())

    def parse_embeddings(body: dict[str, Any]) -> tuple[str, str | None, EmbeddingRequest]:
        embeddings_validator.validate(body)
        return body["model"], body.get("encoding_format"), to_embedding_request(body)

    @router.post("/embeddings", response_model=None,
                 openapi_extra=request_body(openai_embeddings_schema(), model_ids=models))
    async def embeddings(request: Request) -> Response:
        model, encoding_format, embedding_request = await read_request(
            request, max_bytes=settings.max_body_bytes, parse=parse_embeddings)
        result = await unless_disconnected(request, service.embed(embedding_request))
        content = await service.in_worker(
            lambda: embedding_response_json(result, model=model, encoding_format=encoding_format))
        return Response(content, media_type="application/json")

    return router
