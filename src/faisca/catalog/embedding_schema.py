"""Request schemas (draft-07, like the chat ones) of the embedding and token routes: OpenAI's `/v1/embeddings`,
Ollama's `/api/embed` and `/api/embeddings`, and `/tokenize` / `/detokenize` in llama-server's and vLLM's shapes.

They are the same for every model (what a model allows, such as `dimensions`, is checked against its card after).
Unknown fields are accepted, as on the other routes; every optional field may be `null`, meaning absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft7Validator

from faisca.catalog.schema import _describe, first_error
from faisca.errors import InvalidRequest
from faisca.limits import MAX_DETOKENIZE_TOKENS, MAX_EMBEDDING_INPUTS, MAX_INT32

Schema = dict[str, Any]

DRAFT_07 = "http://json-schema.org/draft-07/schema#"

_TOKEN = {"type": "integer", "minimum": 0, "maximum": MAX_INT32}
_TEXTS = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_EMBEDDING_INPUTS}
_TOKENS = {"type": "array", "items": _TOKEN}
_MODEL = {"type": "string", "minLength": 1}


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [{"type": "null"}, schema]}


def _body(properties: Schema, required: list[str], description: str) -> Schema:
    return {"$schema": DRAFT_07, "type": "object", "required": required, "properties": properties,
            "description": description}


def openai_embeddings_schema() -> Schema:
    return _body({
        "model": _MODEL,
        # one array schema (its length checked before its items, so a bound is named as such); a list mixing token
        # ids with anything else is refused after
        "input": {"type": ["string", "array"], "minItems": 1, "maxItems": MAX_EMBEDDING_INPUTS,
                  "items": {"oneOf": [{"type": "string"}, _TOKEN, _TOKENS]},
                  "description": "a text, a list of texts, a list of token ids, or a list of lists of token ids"},
        "encoding_format": _nullable({"type": "string", "enum": ["float", "base64"]}),
        "dimensions": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_INT32}),
        "user": _nullable({"type": "string"}),
    }, ["model", "input"], "OpenAI's embeddings request")


def ollama_embed_schema() -> Schema:
    return _body({
        "model": _MODEL,
        "input": {"oneOf": [{"type": "string"}, _TEXTS]},
        "truncate": _nullable({"type": "boolean", "default": True}),
        "dimensions": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_INT32}),
        "options": _nullable({"type": "object"}),
        "keep_alive": _nullable({"type": ["string", "number"]}),
    }, ["model", "input"], "Ollama's /api/embed request")


def ollama_embeddings_schema() -> Schema:
    return _body({
        "model": _MODEL,
        "prompt": {"type": "string"},
        "options": _nullable({"type": "object"}),
        "keep_alive": _nullable({"type": ["string", "number"]}),
    }, ["model", "prompt"], "Ollama's older /api/embeddings request")


def tokenize_schema() -> Schema:
    flag = _nullable({"type": "boolean"})
    return {**_body({
        "model": _nullable(_MODEL),
        "content": {"type": "string", "description": "llama-server's text"},
        "add_special": flag,
        "parse_special": flag,
        "with_pieces": flag,
        "prompt": {"type": "string", "description": "vLLM's text"},
        "add_special_tokens": flag,
        "return_token_strs": flag,
    }, [], "llama-server's body (`content`) or vLLM's (`prompt`)"),
        "oneOf": [{"required": ["content"]}, {"required": ["prompt"]}]}


def detokenize_schema() -> Schema:
    return _body({"model": _nullable(_MODEL),
                  "tokens": {"type": "array", "items": _TOKEN, "maxItems": MAX_DETOKENIZE_TOKENS}},
                 ["tokens"], "llama-server's and vLLM's body")


class BodyValidator:
    """Validates bodies against one of these schemas; `InvalidRequest` names the field."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._validator = Draft7Validator(schema)

    def validate(self, body: Mapping[str, Any]) -> None:
        error = first_error(self._validator, body)
        if error is not None:
            param, message = _describe(error)
            raise InvalidRequest(message, param=param)
