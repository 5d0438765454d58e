"""The documented limits (`faisca.limits`), on the OpenAI surface's validation and conversion; the Ollama
surface's are in test_ollama_schema.py. Each is refused with a 400 naming the field, and its bound passes."""

from __future__ import annotations

from typing import Any

import pytest

from faisca.api.ollama.convert import from_chat, from_generate
from faisca.api.openai.convert import to_chat_request
from faisca.catalog import Catalog
from faisca.catalog.card import ModelCard
from faisca.catalog.schema import RequestValidator
from faisca.errors import InvalidRequest
from faisca.limits import (
    MAX_CONTENT_PARTS,
    MAX_CONTENT_PARTS_TOTAL,
    MAX_INT32,
    MAX_LOGIT_BIAS_ENTRIES,
    MAX_MESSAGES,
    MAX_SCHEMA_CHARS,
    MAX_SCHEMA_DEPTH,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_TOKEN_IDS,
    MAX_TOOL_SCHEMAS_CHARS,
    MAX_TOOLS,
    MIN_SEED,
)

HELLO = [{"role": "user", "content": "hi"}]


def tool(name: str = "f", parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters or {"type": "object"}}}


def deep_schema(levels: int) -> dict[str, Any]:
    """A schema whose JSON nests `levels` levels of objects."""
    schema: dict[str, Any] = {"type": "object"}
    for _ in range((levels - 1) // 2):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def wide_schema(num_chars: int) -> dict[str, Any]:
    return {"type": "object", "description": "x" * num_chars}


@pytest.fixture(scope="module")
def gemma(catalog: Catalog) -> ModelCard:
    return catalog.resolve("gemma3:270m")


def openai(card: ModelCard, body: dict[str, Any]) -> None:
    body = {"messages": HELLO, **body}
    RequestValidator(card).validate(body)
    to_chat_request(body, card)


@pytest.mark.parametrize(("body", "param"), [
    ({"max_tokens": MAX_INT32 + 1}, "max_tokens"),
    ({"max_completion_tokens": 10**30}, "max_completion_tokens"),
    ({"seed": MAX_SEED + 1}, "seed"),
    ({"seed": MIN_SEED - 1}, "seed"),
    ({"top_k": 10**30}, "top_k"),
    ({"min_tokens": 10**30}, "min_tokens"),
    ({"stop_token_ids": [10**30]}, "stop_token_ids.0"),
    ({"stop_token_ids": [1] * (MAX_STOP_TOKEN_IDS + 1)}, "stop_token_ids"),
    ({"logit_bias": {str(token): 1 for token in range(MAX_LOGIT_BIAS_ENTRIES + 1)}}, "logit_bias"),
    ({"logit_bias": {"1" * 30: 1}}, "logit_bias"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": "x" * (MAX_STOP_CHARS + 1)}, "stop"),
    ({"stop": ["x" * (MAX_STOP_CHARS + 1)]}, "stop.0"),
    ({"messages": HELLO * (MAX_MESSAGES + 1)}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * (MAX_CONTENT_PARTS + 1)}]},
     "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * MAX_CONTENT_PARTS}] * 5}, "messages"),
    ({"tools": [tool(f"f{index}") for index in range(MAX_TOOLS + 1)]}, "tools"),
    ({"tools": [tool(parameters=deep_schema(MAX_SCHEMA_DEPTH + 1))]}, "tools.0.function.parameters"),
    ({"tools": [tool(parameters=wide_schema(MAX_SCHEMA_CHARS))]}, "tools.0.function.parameters"),
    ({"tools": [tool(f"f{index}", wide_schema(MAX_SCHEMA_CHARS - 100)) for index in range(5)]}, "tools"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": deep_schema(40)}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": wide_schema(10**5)}}},
     "response_format.json_schema.schema"),
])
def test_over_a_limit_is_invalid_naming_the_field(gemma: ModelCard, body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        openai(gemma, body)
    assert caught.value.param == param, caught.value.message
    assert len(caught.value.message) < 400  # the offending value is not echoed whole


@pytest.mark.parametrize("body", [
    {"max_tokens": MAX_INT32, "seed": MAX_SEED, "top_k": MAX_INT32, "min_tokens": 0},
    {"seed": MIN_SEED},
    {"stop_token_ids": [MAX_INT32] * MAX_STOP_TOKEN_IDS},
    {"logit_bias": {str(token): 1 for token in range(MAX_LOGIT_BIAS_ENTRIES)}},
    {"stop": ["x" * MAX_STOP_CHARS] * 4},
    {"messages": HELLO * MAX_MESSAGES},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * MAX_CONTENT_PARTS}] * 4},
    {"tools": [tool(f"f{index}") for index in range(MAX_TOOLS)]},
    {"tools": [tool(parameters=deep_schema(MAX_SCHEMA_DEPTH))]},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": deep_schema(MAX_SCHEMA_DEPTH)}}},
])
def test_at_a_limit_passes(gemma: ModelCard, body: dict[str, Any]) -> None:
    openai(gemma, body)
    assert MAX_CONTENT_PARTS * 4 <= MAX_CONTENT_PARTS_TOTAL and MAX_TOOLS * 8 < MAX_TOOL_SCHEMAS_CHARS


@pytest.mark.parametrize(("body", "param"), [
    ({"format": deep_schema(MAX_SCHEMA_DEPTH + 1)}, "format"),
    ({"format": wide_schema(MAX_SCHEMA_CHARS)}, "format"),
    ({"format": {"type": "nope"}}, "format"),
    ({"tools": [tool(parameters=deep_schema(10_000))]}, "tools.0.function.parameters"),
    ({"tools": [tool("bad name")]}, "tools.0.function.name"),
    ({"tools": [tool(), tool()]}, "tools"),
])
def test_ollama_schemas_in_requests_are_bounded(gemma: ModelCard, body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        from_chat({"messages": HELLO, **body}, gemma)
    assert caught.value.param == param, caught.value.message
    if "format" in body:
        with pytest.raises(InvalidRequest):
            from_generate({"prompt": "hi", **body}, gemma)


def test_a_card_without_tools_refuses_malformed_tools_cleanly() -> None:
    plain = ModelCard.model_validate({
        "name": "Test", "version": "1B", "category": "LLM", "size": "1B parameters", "hf_id": "acme/test-1b",
        "license": "MIT", "tool_calling": False, "tool_format": None, "long_term_support": False,
        "context_length": 4096, "lora": False, "input": "text",
    })
    with pytest.raises(InvalidRequest) as caught:
        openai(plain, {"tools": [1]})
    assert caught.value.param == "tools.0.function.name"


def test_a_body_nested_past_the_recursion_limit_is_invalid(gemma: ModelCard) -> None:
    schema = deep_schema(10_000)  # faisca.api.body refuses such bodies before validation; the validator too
    with pytest.raises(InvalidRequest):
        openai(gemma, {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
