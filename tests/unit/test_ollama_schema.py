"""The Ollama bodies' published schemas, and conversion of the bodies that pass them."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft7Validator

from faisca.api.ollama.convert import from_chat, from_generate
from faisca.catalog import Catalog
from faisca.catalog.card import ModelCard
from faisca.catalog.ollama_schema import chat_schema, generate_schema
from faisca.errors import InvalidRequest, UnsupportedCapability

HELLO = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def card(*, input: str = "text", tool_format: str | None = None) -> ModelCard:
    return ModelCard.model_validate({
        "name": "Test", "version": "1B", "category": "LLM", "size": "1B parameters", "hf_id": "acme/test-1b",
        "license": "MIT", "tool_calling": tool_format == "mistral", "tool_format": tool_format,
        "long_term_support": False, "context_length": 4096, "lora": False, "input": input,
    })


PLAIN, VISION, TOOLS = card(), card(input="text+image"), card(tool_format="react")


@pytest.mark.parametrize("c", [PLAIN, VISION, TOOLS])
def test_schemas_are_valid_draft7_and_follow_the_card(c: ModelCard) -> None:
    for schema in (chat_schema(c), generate_schema(c)):
        assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
        Draft7Validator.check_schema(schema)
    chat, generate = chat_schema(c), generate_schema(c)
    message = chat["components"]["schemas"]["Message"]["properties"]
    assert ("tools" in chat["properties"]) == ("tool_calls" in message) == c.accepts_tools
    assert ("images" in generate["properties"]) == ("images" in message) == c.accepts_images


@pytest.fixture(scope="module")
def gemma(catalog: Catalog) -> ModelCard:
    return catalog.resolve("gemma3:270m")


@pytest.mark.parametrize("body", [
    {"model": "gemma3:270m", "messages": HELLO},
    {"model": "gemma3:270m", "messages": HELLO, "stream": False, "keep_alive": "5m", "think": False, "format": "json"},
    {"model": "gemma3:270m", "messages": HELLO, "options": None, "tools": None, "format": "", "stream": None},
    # Open WebUI and Dify send options faisca does not use, and fields of their own
    {"model": "gemma3:270m", "messages": HELLO, "session_id": "x", "options": {"num_thread": 4, "mirostat": 0,
                                                                               "use_mmap": True}},
    {"model": "gemma3:270m", "messages": HELLO, "options": {
        "num_predict": -2, "num_ctx": 256, "temperature": 0, "top_p": 1, "top_k": 40, "min_p": 0.05,
        "repeat_penalty": 1.1, "presence_penalty": -2, "frequency_penalty": 2, "seed": -1, "stop": ["\n", "."]}},
    {"model": "gemma3:270m", "messages": HELLO, "options": {"stop": "\n", "top_k": 40.0, "seed": None}},
    {"model": "gemma3:270m", "messages": [*HELLO, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Lisbon"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"}], "tools": [TOOL]},
])
def test_valid_chat_bodies_pass(gemma: ModelCard, body: dict[str, Any]) -> None:
    from_chat(body, gemma)


@pytest.mark.parametrize(("num_predict", "max_tokens"), [(None, None), (-1, None), (-2, None), (0, None), (7, 7)])
def test_num_predict_minus_one_and_minus_two_mean_as_much_as_fits(gemma: ModelCard, num_predict: int | None,
                                                                  max_tokens: int | None) -> None:
    request = from_generate({"prompt": "hi", "options": {"num_predict": num_predict}}, gemma)
    assert request.sampling.max_tokens == max_tokens and request.fit_context


def test_options_are_read_with_ollamas_defaults(gemma: ModelCard) -> None:
    sampling = from_chat({"messages": HELLO, "options": {"top_k": -1, "stop": "x", "seed": 3}}, gemma).sampling
    assert (sampling.top_k, sampling.stop, sampling.seed, sampling.temperature, sampling.top_p) == (0, ("x",), 3, 0.8, 0.9)


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": HELLO, "options": {"num_predict": "lots"}}, "options.num_predict"),
    ({"messages": HELLO, "options": {"num_predict": -3}}, "options.num_predict"),
    ({"messages": HELLO, "options": {"num_predict": 10**30}}, "options.num_predict"),
    ({"messages": HELLO, "options": {"stop": 5}}, "options.stop"),
    ({"messages": HELLO, "options": {"stop": ["a", 5]}}, "options.stop.1"),
    ({"messages": HELLO, "options": {"stop": ["x"] * 17}}, "options.stop"),
    ({"messages": HELLO, "options": {"stop": ["x" * 257]}}, "options.stop.0"),
    ({"messages": HELLO, "options": {"top_k": 10**30}}, "options.top_k"),
    ({"messages": HELLO, "options": {"top_k": 1.5}}, "options.top_k"),
    ({"messages": HELLO, "options": {"top_p": 1.5}}, "options.top_p"),
    ({"messages": HELLO, "options": {"min_p": -0.1}}, "options.min_p"),
    ({"messages": HELLO, "options": {"temperature": -1}}, "options.temperature"),
    ({"messages": HELLO, "options": {"temperature": "hot"}}, "options.temperature"),
    ({"messages": HELLO, "options": {"repeat_penalty": 0}}, "options.repeat_penalty"),
    ({"messages": HELLO, "options": {"seed": 10**30}}, "options.seed"),
    ({"messages": HELLO, "options": {"seed": "1"}}, "options.seed"),
    ({"messages": HELLO, "options": {"num_ctx": -1}}, "options.num_ctx"),
    ({"messages": HELLO, "options": [1]}, "options"),
    ({"messages": HELLO, "tools": [1]}, "tools.0"),
    ({"messages": HELLO, "tools": [{"type": "function", "function": {}}]}, "tools.0.function.name"),
    ({"messages": HELLO, "tools": [TOOL] * 129}, "tools"),
    ({"messages": [{"role": "assistant", "content": "", "tool_calls": [1]}]}, "messages.0.tool_calls.0"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]},
     "messages.0.tool_calls.0.function.arguments"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": "hi"}, "messages"),
    ({}, "messages"),
    ({"messages": HELLO * 2049}, "messages"),
    ({"messages": HELLO, "format": 5}, "format"),
    ({"messages": HELLO, "format": "yaml"}, "format"),
    ({"messages": HELLO, "stream": "yes"}, "stream"),
    ({"messages": HELLO, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"messages": HELLO, "keep_alive": [1]}, "keep_alive"),
])
def test_invalid_chat_bodies_name_the_field(gemma: ModelCard, body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        from_chat(body, gemma)
    assert caught.value.param == param, caught.value.message
    assert caught.value.message.startswith(f"{param}: ") or param in caught.value.message


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": 5}, "prompt"),
    ({"prompt": "hi", "system": ["x"]}, "system"),
    ({"prompt": "hi", "raw": "yes"}, "raw"),
    ({"prompt": "hi", "options": {"top_k": "many"}}, "options.top_k"),
    ({"prompt": "hi", "suffix": "end"}, "suffix"),
    ({"prompt": "hi", "template": "{{ .Prompt }}"}, "template"),
    ({"prompt": "hi", "context": [1, -2]}, "context.1"),
    ({"prompt": "hi", "context": "1 2"}, "context"),
])
def test_invalid_generate_bodies_name_the_field(gemma: ModelCard, body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        from_generate(body, gemma)
    assert caught.value.param == param, caught.value.message


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": "hi", "images": ["aGk="]}, "images"),
    ({"prompt": "hi", "images": 5}, "images"),
])
def test_images_to_a_text_only_card_are_unsupported(gemma: ModelCard, body: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedCapability) as caught:
        from_generate(body, gemma)
    assert caught.value.param == param and "text only" in caught.value.message
    with pytest.raises(UnsupportedCapability) as caught:
        from_chat({"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}, gemma)
    assert caught.value.param == "messages.0.images"


def test_tools_to_a_card_without_tool_calling_are_unsupported() -> None:
    with pytest.raises(UnsupportedCapability) as caught:
        from_chat({"messages": HELLO, "tools": [TOOL]}, PLAIN)
    assert caught.value.param == "tools"
    with pytest.raises(InvalidRequest) as caught:
        from_chat({"messages": [{"role": "tool", "content": "x"}]}, PLAIN)
    assert caught.value.param == "messages.0.role"


def test_images_on_a_vision_card_are_read(catalog: Catalog) -> None:
    vision = catalog.resolve("ista-daslab-gemma-3-27b-it-gptq-4b-128g")
    request = from_chat({"messages": [{"role": "user", "content": "what?", "images": ["aGk="]}]}, vision)
    assert len(request.messages[0].image_parts) == 1
    with pytest.raises(InvalidRequest) as caught:
        from_generate({"prompt": "hi", "images": [5]}, vision)
    assert caught.value.param == "images.0"
