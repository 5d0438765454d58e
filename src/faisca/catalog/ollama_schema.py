"""A card's Ollama request schemas (`/api/chat`, `/api/generate`), draft-07 like the OpenAI ones, and the
capability check that runs before them.

The fields and their types are Ollama's (`api/types.go`); the bounds are faisca's (`faisca.limits`) and the
ones Ollama's sampler implies. Tools, tool calls and `tool` messages are described only for cards that call
tools, `images` only for cards that read them: a card without the capability refuses them (non-empty) with
`UnsupportedCapability` before the schema is consulted. Unknown top-level fields and unknown `options` are
accepted (Ollama ignores them, and clients such as Open WebUI and Dify send some); every optional field may be
`null`, meaning absent.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

from faisca.catalog.card import ModelCard
from faisca.catalog.schema import RequestValidator
from faisca.errors import UnsupportedCapability
from faisca.lifecycle.keep_alive import DURATION_PATTERN
from faisca.limits import (
    MAX_CONTENT_PARTS,
    MAX_INT32,
    MAX_MESSAGES,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    MIN_SEED,
)

Schema = dict[str, Any]

DRAFT_07 = "http://json-schema.org/draft-07/schema#"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str | list[str], **bounds: Any) -> Schema:
    kinds = [kind] if isinstance(kind, str) else kind
    return {"type": [*kinds, "null"], **bounds}


def _options() -> Schema:
    """The options faisca honours, typed and bounded; any others are accepted and ignored (logged)."""
    stop_string = {"type": "string", "maxLength": MAX_STOP_CHARS}
    return {
        "type": "object",
        "description": "Ollama's model options. num_predict: -1 (until the context ends) and -2 (fill the "
                       "context) are both as many tokens as the context allows; so is 0.",
        "properties": {
            "num_predict": _nullable("integer", minimum=-2, maximum=MAX_INT32),
            "num_ctx": _nullable("integer", minimum=0, maximum=MAX_INT32),
            "temperature": _nullable("number", minimum=0),
            "top_p": _nullable("number", minimum=0, maximum=1),
            "top_k": _nullable("integer", minimum=-1, maximum=MAX_INT32),
            "min_p": _nullable("number", minimum=0, maximum=1),
            "repeat_penalty": _nullable("number", exclusiveMinimum=0, maximum=2),
            "presence_penalty": _nullable("number", minimum=-2, maximum=2),
            "frequency_penalty": _nullable("number", minimum=-2, maximum=2),
            "seed": _nullable("integer", minimum=MIN_SEED, maximum=MAX_SEED),
            "stop": {"oneOf": [{"type": "null"}, stop_string,
                               {"type": "array", "items": stop_string, "maxItems": MAX_STOP_STRINGS}]},
        },
    }


def _format() -> Schema:
    return {"oneOf": [{"type": "null"}, {"type": "string", "enum": ["", "json"]}, {"type": "object"}],
            "description": '"json", or a JSON Schema the answer must follow'}


def _images() -> Schema:
    return _nullable("array", items={"type": "string"}, maxItems=MAX_CONTENT_PARTS,
                     description="base64-encoded images")


def _shared(card: ModelCard) -> Schema:
    """The fields `/api/chat` and `/api/generate` share."""
    return {
        "model": {"type": "string"},
        "format": _format(),
        "options": {"oneOf": [{"type": "null"}, _ref("Options")]},
        "stream": _nullable("boolean", default=True),
        "keep_alive": _nullable(["string", "number"], pattern=DURATION_PATTERN,
                                description="how long the model stays loaded once idle: seconds, or a duration "
                                            '("5m", "1h30m"); 0 unloads it, negative keeps it forever'),
        "think": _nullable(["boolean", "string"]),
        "logprobs": _nullable("boolean", default=False),
        "top_logprobs": _nullable("integer", minimum=0, maximum=20),
    }


def _message(card: ModelCard) -> Schema:
    roles = ["system", "user", "assistant", *(["tool"] if card.accepts_tools else [])]
    properties: Schema = {
        "role": {"type": "string", "enum": roles},
        "content": _nullable("string"),
        "thinking": _nullable("string"),
        "tool_name": _nullable("string"),
        "tool_call_id": _nullable("string"),
    }
    if card.accepts_images:
        properties["images"] = _images()
    if card.accepts_tools:
        properties["tool_calls"] = _nullable("array", items=_ref("ToolCall"), maxItems=MAX_TOOL_CALLS)
    return {"type": "object", "required": ["role"], "properties": properties}


def _components(card: ModelCard) -> Schema:
    schemas: Schema = {"Options": _options()}
    if card.accepts_tools:
        schemas["ToolCall"] = {
            "type": "object",
            "required": ["function"],
            "properties": {
                "id": _nullable("string"),
                "type": _nullable("string"),
                "function": {"type": "object", "required": ["name"], "properties": {
                    "index": _nullable("integer", minimum=0, maximum=MAX_INT32),
                    "name": {"type": "string"},
                    "arguments": _nullable("object"),
                }},
            },
        }
        schemas["Tool"] = {
            "type": "object",
            "required": ["function"],
            "properties": {
                "type": {"type": "string", "enum": ["function"]},
                "function": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"},
                    "description": _nullable("string"),
                    "parameters": _nullable("object"),
                }},
            },
        }
    return {"schemas": schemas}


def chat_schema(card: ModelCard) -> Schema:
    """The card's draft-07 schema of an Ollama `/api/chat` body."""
    properties = {
        **_shared(card),
        "messages": {"type": "array", "maxItems": MAX_MESSAGES, "items": _ref("Message")},
    }
    if card.accepts_tools:
        properties["tools"] = _nullable("array", items=_ref("Tool"), maxItems=MAX_TOOLS)
    components = _components(card)
    components["schemas"]["Message"] = _message(card)
    return {"$schema": DRAFT_07, "type": "object", "required": ["messages"], "properties": properties,
            "components": components}


def generate_schema(card: ModelCard) -> Schema:
    """The card's draft-07 schema of an Ollama `/api/generate` body."""
    properties = {
        **_shared(card),
        "prompt": _nullable("string"),
        "system": _nullable("string"),
        "raw": _nullable("boolean", default=False),
        "suffix": _nullable("string", description="refused unless empty: faisca does not fill in the middle"),
        "template": _nullable("string", description="refused unless empty: the card's template is used"),
        "context": _nullable("array", items={"type": "integer", "minimum": 0, "maximum": MAX_INT32},
                             description="an earlier answer's `context` (the conversation's token ids), continued"),
    }
    if card.accepts_images:
        properties["images"] = _images()
    return {"$schema": DRAFT_07, "type": "object", "properties": properties, "components": _components(card)}


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


def check_capabilities(card: ModelCard, body: Mapping[str, Any]) -> None:
    """Images to a model that reads none, tools (or tool turns) to one that calls none: `UnsupportedCapability`
    naming the first such field."""
    messages = body.get("messages")
    messages = [message for message in messages if isinstance(message, Mapping)] if isinstance(messages, list) else []
    if not card.accepts_images:
        fields = [("images", body.get("images")),
                  *((f"messages.{index}.images", message.get("images")) for index, message in enumerate(messages))]
        if param := next((param for param, value in fields if _present(value)), None):
            raise UnsupportedCapability(f"{param}: the model `{card.id}` takes text only; it cannot read images.",
                                        param=param)
    if not card.accepts_tools:
        fields = [("tools", body.get("tools")), *((f"messages.{index}.tool_calls", message.get("tool_calls"))
                                                  for index, message in enumerate(messages))]
        if param := next((param for param, value in fields if _present(value)), None):
            raise UnsupportedCapability(f"{param}: the model `{card.id}` cannot call tools.", param=param)


class OllamaValidators(NamedTuple):
    chat: RequestValidator
    generate: RequestValidator


@functools.lru_cache(maxsize=64)
def validators(card: ModelCard) -> OllamaValidators:
    """The card's `/api/chat` and `/api/generate` validators, built once per card."""
    return OllamaValidators(RequestValidator(card, chat_schema(card), check_capabilities=check_capabilities),
                            RequestValidator(card, generate_schema(card), check_capabilities=check_capabilities))
