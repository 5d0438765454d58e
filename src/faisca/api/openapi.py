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

Schema = dict[str, Any]


def card_for_any_model(cards: Sequence[ModelCard]) -> ModelCard:
    """A card with every capability one of `cards` has: its schemas accept what any of theirs does."""
    images = any(card.accepts_images for card in cards)
    tool_format = next((card.tool_format for card in cards if card.tool_format is not None), None)
    return cards[0].model_copy(update={"input": "text+image" if images else "text", "tool_format": tool_format})


def inlined(schema: Schema) -> Schema:
    """`schema` without `$schema` and `components`, each `#/components/schemas/X` reference replaced by X's
    definition (the request schemas have no cycles)."""
    definitions = schema.get("components", {}).get("schemas", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                return resolve(definitions[ref.rsplit("/", 1)[1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve({key: value for key, value in schema.items() if key not in ("$schema", "components")})


def request_body(schema: Schema, *, model_ids: Sequence[str] | None) -> dict[str, Any]:
    """A route's `openapi_extra`: its required JSON body, `schema` inlined, `model` one of `model_ids` if given."""
    body = inlined(schema)
    if model_ids:
        body["properties"] = {**body["properties"], "model": {"type": "string", "enum": list(model_ids)}}
        body["required"] = sorted({*body.get("required", []), "model"})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}
