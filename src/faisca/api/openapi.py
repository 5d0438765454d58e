"""Request bodies in the OpenAPI document: the routes read raw JSON (validated per card against the published
draft-07 schemas), so each POST route declares its body here, with a schema covering every served model.

The per-card schemas stay authoritative (`GET /v1/models/{id}/schema`, `GET /api/schema/{chat,generate}`); the
document's is their union: images where any served card reads them, tools where any calls them, `model` one of
the served ids. Its `$ref`s are inlined, so that it stands alone inside the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faisca.catalog import ModelCard
from faisca.catalog.schema import inlined

Schema = dict[str, Any]


def card_for_any_model(cards: Sequence[ModelCard]) -> ModelCard:
    """A card with every capability one of `cards` has: its schemas accept what any of theirs does."""
    images = any(card.accepts_images for card in cards)
    tool_format = next((card.tool_format for card in cards if card.tool_format is not None), None)
    return cards[0].model_copy(update={"input": "text+image" if images else "text", "tool_format": tool_format})


def request_body(schema: Schema, *, model_ids: Sequence[str] | None) -> dict[str, Any]:
    """A route's `openapi_extra`: its required JSON body, `schema` inlined, `model` one of `model_ids` if given."""
    body = inlined(schema)
    if model_ids:
        body["properties"] = {**body["properties"], "model": {"type": "string", "enum": list(model_ids)}}
        body["required"] = sorted({*body.get("required", []), "model"})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}
