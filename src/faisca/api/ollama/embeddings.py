"""Ollama's embeddings: `POST /api/embed` (texts in, `embeddings` out) and the older `POST /api/embeddings` (one
`prompt`, one `embedding`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from faisca.service import Embeddings
from faisca.types import EmbeddingRequest


def from_embed(body: Mapping[str, Any], model_id: str) -> EmbeddingRequest:
    """An `/api/embed` body that passed its schema. As on Ollama, an input longer than the context is cut to fit
    unless `truncate` is false."""
    wire = body["input"]
    inputs = (wire,) if isinstance(wire, str) else tuple(wire)
    return EmbeddingRequest(model_id, inputs, dimensions=None if body.get("dimensions") is None else int(body["dimensions"]),
                            truncate=body.get("truncate") is not False, param="input")


def from_embeddings(body: Mapping[str, Any], model_id: str) -> EmbeddingRequest:
    return EmbeddingRequest(model_id, (body["prompt"],), truncate=True, param="prompt")


def embed_response_json(result: Embeddings, *, model: str, duration_ns: int) -> bytes:
    return json.dumps({"model": model, "embeddings": result.vectors.tolist(), "total_duration": duration_ns,
                       "load_duration": 0, "prompt_eval_count": result.num_tokens}, separators=(",", ":")).encode()


def embeddings_response_json(result: Embeddings) -> bytes:
    return json.dumps({"embedding": result.vectors[0].tolist()}, separators=(",", ":")).encode()
