from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from faisca.catalog.card import ModelCard
from faisca.catalog.schema import RequestValidator, completion_request_schema, request_schema
from faisca.errors import InvalidRequest, UnsupportedCapability
from faisca.limits import (
    MAX_LORA_SCALE,
    MAX_LORAS_PER_REQUEST,
    MAX_CHOICES,
    MAX_CONTENT_PARTS,
    MAX_GRAMMAR_CHARS,
    MAX_INT32,
    MAX_LOGIT_BIAS_ENTRIES,
    MAX_MESSAGES,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_TOKEN_IDS,
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    MIN_SEED,
)

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"  # /work/shared/seeds beside the /work/main repo


def card(*, input: str = "text", tool_calling: bool = False) -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": "Test",
            "version": "1B",
            "category": "LLM",
            "size": "1B parameters",
            "hf_id": "acme/test-1b",
            "license": "MIT",
            "tool_calling": tool_calling,
            "tool_format": "mistral" if tool_calling else None,
            "long_term_support": False,
            "context_length": 4096,
            "lora": False,
            "input": input,
        }
    )


def seed_schema(prefix: str) -> dict[str, Any]:
    """The draft-07 schema that ends a seed (after a "JSON schema" line, "Schema JSON" in the Portuguese ones)."""
    if not SEEDS.is_dir():
        pytest.skip(f"no seeds at {SEEDS}")
    text = next(SEEDS.glob(f"{prefix}_*.txt")).read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() in ("JSON schema", "Schema JSON"))
    return json.loads("\n".join(lines[start + 1 :]))


def with_additions(seed: dict[str, Any], *, tools: bool) -> dict[str, Any]:
    """The seed plus faisca's documented additions: more OpenAI fields, bounds, and null for optional fields."""
    schema = copy.deepcopy(seed)
    properties = schema["properties"]
    properties["messages"]["minItems"] = 1
    properties["messages"]["maxItems"] = MAX_MESSAGES
    properties["n"]["maximum"] = 16
    properties["max_tokens"]["maximum"] = MAX_INT32
    components = schema["components"]["schemas"]
    components["TextContent"]["oneOf"][1]["maxItems"] = MAX_CONTENT_PARTS
    components["UserMessage"]["properties"]["content"]["oneOf"][1]["maxItems"] = MAX_CONTENT_PARTS
    if tools:
        properties["tools"]["maxItems"] = MAX_TOOLS
        components["AssistantMessageWithToolCalls"]["properties"]["tool_calls"]["maxItems"] = MAX_TOOL_CALLS
    properties |= {
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_INT32},
        "seed": {"type": "integer", "minimum": MIN_SEED, "maximum": MAX_SEED},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "top_k": {"type": "integer", "minimum": -1, "maximum": MAX_INT32},
        "min_p": {"type": "number", "minimum": 0, "maximum": 1},
        "repetition_penalty": {"type": "number", "exclusiveMinimum": 0, "maximum": 2},
        "user": {"type": "string"},
        "logit_bias": {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9]{1,9}$"},
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
            "maxProperties": MAX_LOGIT_BIAS_ENTRIES,
        },
        "logprobs": {"type": "boolean", "default": False},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        "ignore_eos": {"type": "boolean", "default": False},
        "min_tokens": {"type": "integer", "minimum": 0, "maximum": MAX_INT32, "default": 0},
        "stop_token_ids": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": MAX_INT32},
                           "maxItems": MAX_STOP_TOKEN_IDS},
        "include_stop_str_in_output": {"type": "boolean", "default": False},
        "cache_salt": {"type": "string", "minLength": 1, "maxLength": 1024},
        "speculative.n_max": {"type": "integer", "minimum": 0, "maximum": 64},
        "lora": {
            "type": "array", "maxItems": MAX_LORAS_PER_REQUEST,
            "items": {"type": "object", "required": ["id", "scale"], "additionalProperties": False, "properties": {
                "id": {"type": "integer", "minimum": 0, "maximum": MAX_INT32},
                "scale": {"type": "number", "minimum": -MAX_LORA_SCALE, "maximum": MAX_LORA_SCALE},
            }},
        },
    }
    if tools:
        properties["parallel_tool_calls"] = {"type": "boolean"}
    for name, field in properties.items():
        if name != "messages":
            field["type"] = [field["type"], "null"]
    properties["model"] = {"type": "string"}
    properties["keep_alive"] = request_schema(card())["properties"]["keep_alive"]  # Ollama's, an extension here
    stop_string = {"type": "string", "maxLength": MAX_STOP_CHARS}
    properties["stop"] = {"oneOf": [{"type": "null"}, stop_string, {"type": "array", "items": stop_string, "maxItems": 4}]}
    if tools:
        with_calls = schema["components"]["schemas"]["AssistantMessageWithToolCalls"]["properties"]
        with_calls["content"] = {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/TextContent"}]}
    return schema


STRUCTURED_OUTPUT_FIELDS = {"response_format": "ResponseFormat", "tool_choice": "ToolChoice"}


def without_structured_output(schema: dict[str, Any]) -> dict[str, Any]:
    """`response_format`, `tool_choice` and `structured_outputs` are whole additions, checked by the validation tests
    below."""
    schema = copy.deepcopy(schema)
    schema["properties"].pop("structured_outputs")
    for field, component in STRUCTURED_OUTPUT_FIELDS.items():
        schema["properties"].pop(field, None)
        schema["components"]["schemas"].pop(component, None)
    return schema


def test_vision_card_schema_is_seed_001_plus_additions() -> None:
    schema = request_schema(card(input="text+image"))
    assert without_structured_output(schema) == with_additions(seed_schema("001"), tools=False)
    assert "response_format" in schema["properties"] and "tool_choice" not in schema["properties"]


def test_tool_card_schema_is_seed_003_plus_additions() -> None:
    schema = request_schema(card(tool_calling=True))
    assert without_structured_output(schema) == with_additions(seed_schema("003"), tools=True)
    assert {"response_format", "tool_choice"} <= set(schema["properties"])


def test_plain_text_card_has_no_images_and_no_tools() -> None:
    schema = request_schema(card())
    schemas = schema["components"]["schemas"]
    assert "tools" not in schema["properties"]
    assert {"ImageContentItem", "ImageContent", "ToolMessage", "ToolCalls", "ToolDefinition"}.isdisjoint(schemas)
    assert "ImageContentItem" not in json.dumps(schema)
    assert schemas["UserMessage"]["properties"]["content"]["oneOf"][1]["items"] == {
        "oneOf": [{"$ref": "#/components/schemas/TextContentItem"}]
    }


def test_schemas_are_valid_draft7() -> None:
    from jsonschema import Draft7Validator

    for c in (card(), card(input="text+image"), card(tool_calling=True), card(input="text+image", tool_calling=True)):
        Draft7Validator.check_schema(request_schema(c))


TEXT = RequestValidator(card())
VISION = RequestValidator(card(input="text+image"))
TOOLS = RequestValidator(card(tool_calling=True))

HELLO = [{"role": "user", "content": "hi"}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("validator", "body"),
    [
        (TEXT, {"messages": HELLO}),
        (TEXT, {"model": "m", "messages": [{"role": "system", "content": "be brief"}, *HELLO], "name": "x"}),
        (TEXT, {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "ana"}]}),
        (TEXT, {"messages": [*HELLO, {"role": "assistant", "content": "hello"}, *HELLO]}),
        (
            TEXT,
            {
                "messages": HELLO,
                "temperature": 0.7,
                "top_p": 1,
                "n": 16,
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": 5,
                "max_completion_tokens": 5,
                "stop": ["a", "b"],
                "seed": 1,
                "top_k": -1,
                "min_p": 0.05,
                "repetition_penalty": 1.1,
                "presence_penalty": -2,
                "frequency_penalty": 2,
                "user": "u",
            },
        ),
        (TEXT, {"messages": HELLO, "stop": "\n"}),
        (
            TEXT,
            {
                "messages": HELLO,
                **dict.fromkeys(
                    ["max_tokens", "temperature", "top_p", "n", "stream", "stop", "seed", "stream_options", "user"]
                ),
            },
        ),
        (VISION, {"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, IMAGE]}]}),
        (VISION, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        (TOOLS, {"messages": HELLO, "tools": [TOOL], "tool_choice": "auto"}),
        (TOOLS, {"messages": HELLO, "tools": None}),
        (
            TOOLS,
            {
                "messages": [
                    *HELLO,
                    {"role": "assistant", "content": None, "tool_calls": [CALL]},
                    {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
                    {"role": "assistant", "tool_calls": [CALL]},
                    {"role": "assistant", "content": "", "tool_calls": [CALL]},
                ],
                "tools": [TOOL],
            },
        ),
    ],
)
def test_valid_bodies_pass(validator: RequestValidator, body: dict[str, Any]) -> None:
    validator.validate(body)


@pytest.mark.parametrize(
    ("validator", "body", "param", "words"),
    [
        (TEXT, {"messages": HELLO, "temperature": 3}, "temperature", "3 is greater than the maximum of 2"),
        (TEXT, {"messages": HELLO, "temperature": "hot"}, "temperature", "'hot' is not of type"),
        (TEXT, {"messages": HELLO, "temperature": True}, "temperature", "is not of type"),
        (TEXT, {"messages": HELLO, "top_p": 1.5}, "top_p", "maximum of 1"),
        (TEXT, {"messages": HELLO, "n": 0}, "n", "minimum of 1"),
        (TEXT, {"messages": HELLO, "n": 17}, "n", "maximum of 16"),
        (TEXT, {"messages": HELLO, "n": 1.5}, "n", "'integer'"),
        (TEXT, {"messages": HELLO, "stream": "yes"}, "stream", "'boolean'"),
        (TEXT, {"messages": HELLO, "repetition_penalty": 0}, "repetition_penalty", "0"),
        (TEXT, {"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop", "is too long"),
        (TEXT, {"messages": HELLO, "model": 7}, "model", "'string'"),
        (TEXT, {"messages": []}, "messages", "[] should be non-empty"),
        (TEXT, {"messages": "hi"}, "messages", "'array'"),
        (TEXT, {}, "messages", "messages: is required"),
        (TEXT, {"messages": ["hi"]}, "messages.0", "'hi' is not of type 'object'"),
        (
            TEXT,
            {"messages": [{"role": "robot", "content": "hi"}]},
            "messages.0.role",
            "'robot' is not one of 'system', 'user', 'assistant'",
        ),
        (
            TOOLS,
            {"messages": [{"role": "robot", "content": "hi"}]},
            "messages.0.role",
            "'robot' is not one of 'system', 'user', 'assistant', 'tool'",
        ),
        (TEXT, {"messages": [{"role": "user", "content": 5}]}, "messages.0.content", "5 is not of type 'string', 'array'"),
        (TEXT, {"messages": [{"role": "user"}]}, "messages.0.content", "is required"),
        (
            VISION,
            {"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
            "messages.0.content.0.type",
            "'video' is not one of 'text', 'image_url'",
        ),
        (
            TEXT,
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, IMAGE]}]},
            "messages.0.content.1.image_url",
            "takes text only",
        ),
        (
            VISION,
            {"messages": [{"role": "system", "content": [IMAGE]}]},
            "messages.0.content.0.type",
            "'image_url' is not one of 'text'",
        ),
        (
            VISION,
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages.0.content.0.text",
            "'string'",
        ),
        (
            VISION,
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages.0.content.0.image_url.url",
            "is required",
        ),
        (
            TEXT,
            {"messages": [*HELLO, {"role": "assistant", "content": None, "tool_calls": [CALL]}]},
            "messages.1.tool_calls",
            "not allowed",
        ),
        (TOOLS, {"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id", "is required"),
        (
            TOOLS,
            {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "id": 1}]}]},
            "messages.0.tool_calls.0.id",
            "'string'",
        ),
        (TOOLS, {"messages": HELLO, "tools": [{"type": "function", "function": {}}]}, "tools.0.function.name", "required"),
        (TOOLS, {"messages": HELLO, "tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools.0.type", "'retrieval' is not one of"),
    ],
)
def test_invalid_bodies_name_the_field(validator: RequestValidator, body: Any, param: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validator.validate(body)
    assert caught.value.param == param
    assert caught.value.message.startswith(f"{param}: ")
    assert words in caught.value.message


@pytest.mark.parametrize("body", [[], "{}", None, 3])
def test_non_object_body_is_rejected_without_param(body: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        TEXT.validate(body)
    assert caught.value.param is None
    assert "JSON object" in caught.value.message


def test_an_image_to_a_text_only_model_is_an_unsupported_capability() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, IMAGE]}]}
    with pytest.raises(UnsupportedCapability) as caught:
        TEXT.validate(body)
    assert caught.value.param == "messages.0.content.1.image_url"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO, "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": HELLO, "tool_choice": {"type": "function"}}, "tool_choice.function"),
        ({"messages": HELLO, "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"messages": HELLO, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ],
)
def test_structured_output_fields_are_checked(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        TOOLS.validate(body)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("structured", "param", "words"),
    [
        ({"grammar": 5}, "structured_outputs.grammar", "of type"),
        ({"choice": []}, "structured_outputs.choice", "should be non-empty"),
        ({"choice": ["a"] * (MAX_CHOICES + 1)}, "structured_outputs.choice", "is too long"),
        ({"regex": "a" * (MAX_GRAMMAR_CHARS + 1)}, "structured_outputs.regex", "is too long"),
        ({"json": [1]}, "structured_outputs.json", "of type"),
        ({"structural_tag": "x"}, "structured_outputs", "'structural_tag' was unexpected"),
        ("start: x", "structured_outputs", "of type"),
    ],
)
def test_structured_outputs_are_checked(structured: Any, param: str, words: str) -> None:
    for validator in (TEXT, RequestValidator(card(), completion_request_schema(card()))):
        with pytest.raises(InvalidRequest) as caught:
            validator.validate({"messages": HELLO, "prompt": "p", "structured_outputs": structured})
        assert caught.value.param == param and words in caught.value.message


def test_structured_output_fields_pass() -> None:
    TOOLS.validate({"messages": HELLO, "tool_choice": {"type": "function", "function": {"name": "f"}},
                    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
                    "parallel_tool_calls": False})
    TEXT.validate({"messages": HELLO, "response_format": {"type": "json_object"}})
    TEXT.validate({"messages": HELLO, "structured_outputs": {"json": '{"type": "object"}', "regex": None}})
    TEXT.validate({"messages": HELLO, "structured_outputs": None})
