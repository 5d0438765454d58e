"""A card's chat-completion request schema (the seeds' draft-07 "JSON schema") and its validator.

The schema is built from the card's capabilities: image parts only for `input = "text+image"`, tools and tool
messages only for `tool_calling`. On top of the seeds it accepts the other OpenAI sampling fields and `null`
for every optional field, as OpenAI does. Formats (`"format": "uri"`) are annotations only: data URIs pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

from faisca.catalog.card import ModelCard
from faisca.errors import InvalidRequest, UnsupportedCapability
from faisca.lifecycle.keep_alive import DURATION_PATTERN
from faisca.limits import (
    MAX_CHOICE_CHARS,
    MAX_CHOICES,
    MAX_CONTENT_PARTS,
    MAX_CONTENT_PARTS_TOTAL,
    MAX_GRAMMAR_CHARS,
    MAX_INT32,
    MAX_LORA_SCALE,
    MAX_DRAFT_TOKENS,
    MAX_LORAS_PER_REQUEST,
    MAX_LOGIT_BIAS_ENTRIES,
    MAX_MESSAGES,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS_OPENAI,
    MAX_STOP_TOKEN_IDS,
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    MIN_SEED,
)

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], properties: Schema, **extra: Any) -> Schema:
    return {"type": "object", "required": required, "properties": properties, **extra}


def _message(role: str, content: Schema) -> Schema:
    return _object(["role", "content"], {"role": {"type": "string", "enum": [role]}, "content": content})


def _structured_outputs() -> Schema:
    """vLLM's `structured_outputs` (inline: the legacy completion schema has it too, and no components)."""
    text = {"type": ["string", "null"], "maxLength": MAX_GRAMMAR_CHARS}
    return _object([], {
        "json": {"type": ["object", "string", "null"], "description": "a JSON Schema (or its JSON text)"},
        "regex": {**text, "description": "a regular expression the whole output matches"},
        "choice": {"type": ["array", "null"], "minItems": 1, "maxItems": MAX_CHOICES,
                   "items": {"type": "string", "maxLength": MAX_CHOICE_CHARS},
                   "description": "the output is one of these strings"},
        "grammar": {**text, "description": "a grammar in llguidance's Lark dialect (vLLM's `guidance` backend)"},
        "json_object": {"type": ["boolean", "null"], "description": "true: any JSON object"},
    }, additionalProperties=False,
        description="Constrained decoding, as vLLM's: exactly one of `json`, `regex`, `choice`, `grammar`, "
                    "`json_object`; not with `tools` or a JSON `response_format`")


def _properties(card: ModelCard) -> Schema:
    optional: Schema = {
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 16, "default": 1},
        "stream": {"type": "boolean", "default": False},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_INT32},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2, "default": 0},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2, "default": 0},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_INT32},
        "seed": {"type": "integer", "minimum": MIN_SEED, "maximum": MAX_SEED},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "top_k": {"type": "integer", "minimum": -1, "maximum": MAX_INT32},
        "min_p": {"type": "number", "minimum": 0, "maximum": 1},
        "repetition_penalty": {"type": "number", "exclusiveMinimum": 0, "maximum": 2},
        "user": {"type": "string"},
        "logprobs": {"type": "boolean", "default": False},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        "ignore_eos": {"type": "boolean", "default": False},
        "min_tokens": {"type": "integer", "minimum": 0, "maximum": MAX_INT32, "default": 0},
        "stop_token_ids": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": MAX_INT32},
                           "maxItems": MAX_STOP_TOKEN_IDS},
        "include_stop_str_in_output": {"type": "boolean", "default": False},
        # vLLM's: prompts share cached prefixes only with requests of the same salt (a tenant's own)
        "cache_salt": {"type": "string", "minLength": 1, "maxLength": 1024},
        "logit_bias": {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9]{1,9}$"},
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
            "maxProperties": MAX_LOGIT_BIAS_ENTRIES,
        },
        "structured_outputs": _structured_outputs(),
        # llama-server's: draft tokens speculative decoding verifies per step at most for this request (0: none);
        # the server's --draft-max when absent. It changes the speed only, never the text.
        "speculative.n_max": {"type": "integer", "minimum": 0, "maximum": MAX_DRAFT_TOKENS},
        # llama-server's: the LoRA adapters to apply and their scales (ids as in GET /lora-adapters); those not
        # listed are off
        "lora": {
            "type": "array", "maxItems": MAX_LORAS_PER_REQUEST,
            "items": {"type": "object", "required": ["id", "scale"], "additionalProperties": False, "properties": {
                "id": {"type": "integer", "minimum": 0, "maximum": MAX_INT32},
                "scale": {"type": "number", "minimum": -MAX_LORA_SCALE, "maximum": MAX_LORA_SCALE},
            }},
        },
    }
    nullable_refs = {"response_format": "ResponseFormat"}  # field -> component
    if card.accepts_tools:
        optional["tools"] = {"type": "array", "items": _ref("ToolDefinition"), "maxItems": MAX_TOOLS}
        optional["parallel_tool_calls"] = {"type": "boolean"}
        nullable_refs["tool_choice"] = "ToolChoice"
    stop_string = {"type": "string", "maxLength": MAX_STOP_CHARS}
    stop = [{"type": "null"}, stop_string, {"type": "array", "items": stop_string, "maxItems": MAX_STOP_STRINGS_OPENAI}]
    return {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "maxItems": MAX_MESSAGES, "items": _ref("Message")},
        **{name: {**field, "type": [field["type"], "null"]} for name, field in optional.items()},
        # Ollama's (an extension here; vLLM has none): how long the model stays loaded once idle
        "keep_alive": {"type": ["string", "number", "null"], "pattern": DURATION_PATTERN,
                       "description": 'seconds, or a duration ("5m", "1h30m"); 0 unloads it, negative keeps it forever'},
        "stop": {"oneOf": stop},
        **{field: {"oneOf": [{"type": "null"}, _ref(component)]} for field, component in nullable_refs.items()},
    }


def _components(card: ModelCard) -> Schema:
    images, tools = card.input == "text+image", card.accepts_tools
    parts = ["TextContentItem", "ImageContentItem"] if images else ["TextContentItem"]
    schemas: Schema = {
        "Message": {"oneOf": [_ref(name) for name in ("SystemMessage", "UserMessage", "AssistantMessage")]},
        "SystemMessage": _message("system", _ref("TextContent")),
        "UserMessage": _message(
            "user", {"oneOf": [{"type": "string"}, {"type": "array", "items": {"oneOf": [_ref(p) for p in parts]},
                                                     "maxItems": MAX_CONTENT_PARTS}]}
        ),
        "AssistantMessage": {"oneOf": [_ref("AssistantMessageWithoutToolCalls")]},
        "AssistantMessageWithoutToolCalls": {
            **_message("assistant", _ref("TextContent")),
            "not": {"required": ["tool_calls"]},
        },
        "TextContent": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": _ref("TextContentItem"), "maxItems": MAX_CONTENT_PARTS}],
            "description": "Text content that can be provided either as a simple string or as an array of "
            "TextContentItem objects",
        },
        "TextContentItem": _object(
            ["type", "text"], {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}
        ),
    }
    schemas["ResponseFormat"] = {
        "oneOf": [
            _object(["type"], {"type": {"type": "string", "enum": ["text", "json_object"]}}),
            _object(["type", "json_schema"], {
                "type": {"type": "string", "enum": ["json_schema"]},
                "json_schema": _object([], {
                    "name": {"type": "string"}, "schema": {"type": "object"}, "strict": {"type": ["boolean", "null"]},
                }),
            }),
        ],
        "description": "Structured output: JSON, or JSON valid against a schema",
    }
    if images:
        url = _object(["url"], {"url": {"type": "string", "format": "uri"}})
        schemas["ImageContent"] = {"type": "array", "items": _ref("ImageContentItem")}
        schemas["ImageContentItem"] = _object(
            ["type", "image_url"], {"type": {"type": "string", "enum": ["image_url"]}, "image_url": url}
        )
    if tools:
        schemas["Message"]["oneOf"].append(_ref("ToolMessage"))
        schemas["AssistantMessage"]["oneOf"].append(_ref("AssistantMessageWithToolCalls"))
        call = _object(["name", "arguments"], {"name": {"type": "string"}, "arguments": {"type": "string"}})
        function = {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "parameters": {"type": "object", "additionalProperties": True},
            "strict": {"type": "boolean", "default": False},
        }
        schemas |= {
            "ToolMessage": _object(
                ["role", "content", "tool_call_id"],
                {"role": {"enum": ["tool"]}, "content": {"type": "string"}, "tool_call_id": {"type": "string"}},
            ),
            "AssistantMessageWithToolCalls": _object(
                ["role", "tool_calls"],
                {
                    "role": {"type": "string", "enum": ["assistant"]},
                    "content": {"oneOf": [{"type": "null"}, _ref("TextContent")]},  # null: an addition to 003
                    "tool_calls": {"type": "array", "items": _ref("ToolCalls"), "maxItems": MAX_TOOL_CALLS},
                },
            ),
            "ToolCalls": _object(
                ["function", "id", "type"],
                {"function": call, "id": {"type": "string"}, "type": {"enum": ["function"]}},
                description="The name and arguments of a function that should be called, as generated by the model.",
            ),
            "ToolChoice": {
                "oneOf": [
                    {"type": "string", "enum": ["none", "auto", "required"]},
                    _object(["type", "function"], {
                        "type": {"type": "string", "enum": ["function"]},
                        "function": _object(["name"], {"name": {"type": "string"}}),
                    }),
                ],
            },
            "ToolDefinition": _object(
                ["type", "function"],
                {"type": {"type": "string", "enum": ["function"]}, "function": _object(["name"], function)},
                description="Definition of a tool that can be used by the model",
            ),
        }
    return {"schemas": schemas}


def request_schema(card: ModelCard) -> Schema:
    """The card's draft-07 chat-completion request schema, shaped like the seeds'."""
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "required": ["messages"],
        "properties": _properties(card),
        "components": _components(card),
    }


# Chat-only fields, left out of the legacy completion schema (whose `logprobs` is a number of alternatives).
_CHAT_ONLY_FIELDS = frozenset({"messages", "tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs",
                               "top_logprobs", "max_completion_tokens"})


def completion_request_schema(card: ModelCard) -> Schema:
    """The card's legacy completion (`/v1/completions`) request schema: a text prompt and the shared sampling fields."""
    shared = {name: field for name, field in _properties(card).items() if name not in _CHAT_ONLY_FIELDS}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "required": ["prompt"],
        "properties": {
            **shared,
            "prompt": {"oneOf": [{"type": "string"},
                                 {"type": "array", "minItems": 1, "maxItems": 16, "items": {"type": "string"}}]},
            "echo": {"type": ["boolean", "null"], "default": False},
            "logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
            "suffix": {"type": ["string", "null"]},
            "best_of": {"type": ["integer", "null"], "minimum": 1, "maximum": 16},
        },
    }


def inlined(schema: Schema) -> Schema:
    """`schema` without `$schema` and `components`, each `#/components/schemas/X` reference replaced by X's
    definition (the request schemas have no cycles). Validating against it is about twice as fast, and it stands
    alone inside another document (the OpenAPI one)."""
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


def check_num_parts(body: Mapping[str, Any]) -> None:
    """At most `MAX_CONTENT_PARTS_TOTAL` content parts (OpenAI) or images (Ollama) in all the messages together:
    a bound the schema cannot say, checked before it (its validation costs about 0.1 ms a part)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    num_parts = sum(len(message[key]) for message in messages if isinstance(message, dict)
                    for key in ("content", "images") if isinstance(message.get(key), list))
    if num_parts > MAX_CONTENT_PARTS_TOTAL:
        raise InvalidRequest(f"messages: {num_parts} content parts in all; at most {MAX_CONTENT_PARTS_TOTAL} are "
                             f"accepted in one request.", param="messages")


def _leaves(error: ValidationError) -> list[ValidationError]:
    """The innermost errors under a oneOf, from the branches whose discriminator matched.

    A branch is ruled out by an `enum` failing on a direct property (its `role` or `type` is another one) or by
    a `not` (a key it forbids, like `tool_calls`). When every branch is ruled out, the discriminator errors of the
    nearest ones are returned, so that the allowed values can be listed together.
    """
    if not error.context:
        return [error]
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).extend(_leaves(sub))
    depth = len(error.absolute_path)

    def discriminates(leaf: ValidationError) -> bool:
        return leaf.validator == "not" or (leaf.validator == "enum" and len(leaf.absolute_path) == depth + 1)

    def distance(leaves: list[ValidationError]) -> int:  # 0: matched; 1: forbids a key present; 2: another role
        return max((2 if leaf.validator == "enum" else 1 for leaf in leaves if discriminates(leaf)), default=0)

    nearest = min(map(distance, branches.values()))
    return [
        leaf
        for leaves in branches.values()
        if distance(leaves) == nearest
        for leaf in leaves
        if nearest == 0 or discriminates(leaf)
    ]


def _path(leaf: ValidationError) -> list[str]:
    """The offending field: the instance's path, plus the key when one is missing or forbidden."""
    path = [str(part) for part in leaf.absolute_path]
    if leaf.validator == "required":
        path.append(next(name for name in leaf.validator_value if name not in leaf.instance))
    elif leaf.validator == "not" and isinstance(leaf.validator_value, dict) and leaf.validator_value.get("required"):
        path.append(leaf.validator_value["required"][0])
    return path


def _short(value: Any) -> str:
    """`repr(value)`, cut to a length fit for an error message (the value may be a whole array)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text)} characters)"


def _bound_message(leaf: ValidationError) -> str | None:
    """The bound a value broke, said plainly (the validator's own message repeats the value, however long)."""
    bound, value = leaf.validator_value, leaf.instance
    match leaf.validator:
        case "maxItems":
            return f"is too long: {len(value)} items; at most {bound} are accepted"
        case "maxLength":
            return f"is too long: {len(value)} characters; at most {bound} are accepted"
        case "maxProperties":
            return f"has too many entries: {len(value)}; at most {bound} are accepted"
    return None


def _describe(error: ValidationError) -> tuple[str | None, str]:
    """The param (dotted path) and message of the most specific error under `error`."""
    leaves = _leaves(error)
    # The deepest field wins; at the same depth a wrong value beats a missing key beats a type mismatch (the
    # latter is usually a oneOf branch for another type).
    best = max(leaves, key=lambda leaf: (len(_path(leaf)), {"type": 0, "required": 1}.get(leaf.validator, 2)))
    path = _path(best)
    message = _bound_message(best) or best.message
    if best.validator in ("enum", "type"):
        allowed: list[Any] = []
        for leaf in leaves:
            if leaf.validator == best.validator and _path(leaf) == path:
                values = leaf.validator_value if isinstance(leaf.validator_value, list) else [leaf.validator_value]
                allowed += [value for value in values if value not in allowed]
        listed = ", ".join(repr(value) for value in allowed)
        message = f"{_short(best.instance)} is not {'one of' if best.validator == 'enum' else 'of type'} {listed}"
    elif best.validator == "required":
        message = "is required"
    elif best.validator == "not":
        message = "is not allowed here"
    elif len(message) > 300:
        message = message[:300] + "…"
    param = ".".join(path) or None
    return param, f"{param}: {message}" if param else message


def first_error(validator: Draft7Validator, body: Mapping[str, Any]) -> ValidationError | None:
    """The shallowest error (a missing `messages` before a bad message), the first in schema order among equals.

    Errors come lazily in schema order, and the top-level keywords (`type`, `required`) come before `properties`:
    once an error on a top-level field is seen, none shallower can follow, so the rest of the body (a long array
    past its `maxItems`) is not walked.
    """
    best: ValidationError | None = None
    for error in validator.iter_errors(body):
        if best is None or len(error.absolute_path) < len(best.absolute_path):
            best = error
        if len(best.absolute_path) <= 1:
            break
    return best


class RequestValidator:
    """Validates request bodies against one card's schema (chat completions, or the `schema` given); one per card.

    `check_capabilities`, when given, runs first: it refuses what the card cannot do (tools, images) with
    `UnsupportedCapability` rather than as a field the schema does not know."""

    def __init__(self, card: ModelCard, schema: Schema | None = None, *,
                 check_capabilities: Callable[[ModelCard, Mapping[str, Any]], None] | None = None) -> None:
        self._card = card
        self.schema = request_schema(card) if schema is None else schema
        self._validator = Draft7Validator(inlined(self.schema))
        self._check_capabilities = check_capabilities

    def validate(self, body: object) -> None:
        """Raise `InvalidRequest` naming the offending field (dotted `param`) if `body` is not a valid request."""
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", param=None)
        if self._check_capabilities is not None:
            self._check_capabilities(self._card, body)
        check_num_parts(body)
        try:
            error = first_error(self._validator, body)
        except RecursionError as exc:  # bodies read by faisca.api.body nest 64 levels at most
            raise InvalidRequest("The request body is nested too deeply.") from exc
        if error is not None:
            param, message = _describe(error)
            if not self._card.accepts_images and param is not None and param.endswith(".type") and (
                error.validator != "required" and _is_image_part_type(error)
            ):
                image_param = param.removesuffix(".type") + ".image_url"
                raise UnsupportedCapability(
                    f"{image_param}: the model `{self._card.id}` takes text only; it cannot read images.",
                    param=image_param,
                )
            raise InvalidRequest(message, param=param)


def _is_image_part_type(error: ValidationError) -> bool:
    return any(leaf.instance == "image_url" for leaf in _leaves(error))
