"""OpenAI's embeddings, `POST /v1/embeddings`: the wire body as an `EmbeddingRequest`, the vectors as the response."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from faisca.errors import InvalidRequest
from faisca.service import Embeddings
from faisca.types import EmbeddingRequest


def to_embedding_request(body: Mapping[str, Any]) -> EmbeddingRequest:
    """A body that passed `openai_embeddings_schema`: a text, texts, token ids, or lists of token ids."""
    wire = body["input"]
    if isinstance(wire, str):
        inputs: tuple[str | tuple[int, ...], ...] = (wire,)
    elif all(isinstance(item, int | float) for item in wire):  # the schema's integers (2.0 is one to JSON Schema)
        inputs = (tuple(int(item) for item in wire),)
    elif any(isinstance(item, int | float) for item in wire):
        raise InvalidRequest("input: a list of token ids holds only integers; to embed several inputs, give a list "
                             "of texts or a list of lists of token ids.", param="input")
    else:
        inputs = tuple(item if isinstance(item, str) else tuple(int(token) for token in item) for item in wire)
    dimensions = body.get("dimensions")
    return EmbeddingRequest(body["model"], inputs, dimensions=None if dimensions is None else int(dimensions),
                            param="input")


def embedding_response_json(result: Embeddings, *, model: str, encoding_format: str | None) -> bytes:
    """The response body (built off the event loop: it grows with inputs × dimensions). `base64`: each vector's
    little-endian float32 bytes, as OpenAI sends them (and its Python client asks for by default)."""
    if encoding_format == "base64":
        vectors: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in result.vectors]
    else:
        vectors = result.vectors.tolist()
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": result.num_tokens, "total_tokens": result.num_tokens},
    }
    return json.dumps(body, separators=(",", ":")).encode()
