"""Tool calling and structured output on the real embedded Gemma 3 270M (ReAct, constrained by llguidance)."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.server import GEMMA

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string", "description": "The city"}},
                       "required": ["location"]},
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]},
    },
}
TOOLS = [WEATHER, ADD]
ASK = [{"role": "system", "content": "You are a helpful assistant with access to tools."},
       {"role": "user", "content": "What is the weather in London?"}]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}


def assert_valid_calls(message: openai.types.chat.ChatCompletionMessage) -> list[tuple[str, dict]]:
    assert message.tool_calls, message
    calls = []
    for call in message.tool_calls:
        assert re.fullmatch(r"[a-zA-Z0-9]{9}", call.id) and call.type == "function"
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, PARAMETERS[call.function.name])
        calls.append((call.function.name, arguments))
    assert "Action" not in (message.content or "") and "```" not in (message.content or "")
    return calls


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_always_gives_a_schema_valid_call(client: openai.OpenAI, seed: int) -> None:
    completion = client.chat.completions.create(model=GEMMA, messages=ASK, tools=TOOLS, tool_choice="required",  # type: ignore[arg-type]
                                                temperature=0.8, seed=seed, max_tokens=400)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert_valid_calls(choice.message)


def test_a_named_tool_is_the_one_called(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=GEMMA, messages=[{"role": "user", "content": "What is 2 plus 3?"}], tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "add"}}, max_tokens=160, temperature=0)
    [(name, arguments)] = assert_valid_calls(completion.choices[0].message)
    assert name == "add" and set(arguments) == {"a", "b"}


def test_none_never_calls(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=GEMMA, messages=ASK, tools=TOOLS, tool_choice="none",  # type: ignore[arg-type]
                                                max_tokens=160, temperature=0)
    choice = completion.choices[0]
    assert not choice.message.tool_calls and choice.finish_reason in ("stop", "length")


def test_auto_answers_with_content_or_a_valid_call(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=GEMMA, messages=ASK, tools=TOOLS, max_tokens=160, temperature=0)  # type: ignore[arg-type]
    choice = completion.choices[0]
    if choice.message.tool_calls:
        assert_valid_calls(choice.message)
        assert choice.finish_reason == "tool_calls"
    else:
        assert choice.message.content is not None


def test_streamed_deltas_reassemble_to_the_non_streamed_calls(fresh_client: openai.OpenAI) -> None:
    client = fresh_client
    request = dict(model=GEMMA, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=160, temperature=0)
    whole = client.chat.completions.create(**request).choices[0]  # type: ignore[call-overload]
    calls: dict[int, dict[str, str]] = {}
    reasoning, finish = "", None
    for chunk in client.chat.completions.create(**request, stream=True):  # type: ignore[call-overload]
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning_content", None) or delta.model_extra.get("reasoning_content") or ""
        for fragment in delta.tool_calls or []:
            if fragment.id is not None:
                assert fragment.index not in calls and fragment.function.name
                calls[fragment.index] = {"name": fragment.function.name, "arguments": ""}
            calls[fragment.index]["arguments"] += fragment.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (call.function.name, call.function.arguments) for call in whole.message.tool_calls or []]
    assert finish == "tool_calls"
    assert reasoning == (whole.message.model_extra or {}).get("reasoning_content", "") or reasoning == (whole.message.reasoning_content or "")  # type: ignore[attr-defined]


def test_a_follow_up_turn_with_the_tool_result_is_accepted(client: openai.OpenAI) -> None:
    messages = [*ASK,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_8f3a2b1c9d", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"location": "London"}'}}]},
                {"role": "tool", "tool_call_id": "call_8f3a2b1c9d", "content": "Rainy, 12 °C"}]
    completion = client.chat.completions.create(model=GEMMA, messages=messages, tools=TOOLS, max_tokens=120, temperature=0)  # type: ignore[arg-type]
    assert completion.choices[0].finish_reason in ("stop", "tool_calls", "length")


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "function", "function": {"name": "get weather", "parameters": {"type": "object"}}}, "tools.0.function.name"),
        ({"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}, "tools.0.function.parameters"),
        ({"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": "a"}}}, "tools.0.function.parameters"),
    ],
)
def test_bad_tool_definitions_are_400_naming_the_tool(http: httpx.Client, tool: dict, param: str) -> None:
    response = http.post("/v1/chat/completions", json={"model": GEMMA, "messages": ASK, "tools": [tool]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_named_tool_that_is_not_offered_is_400(http: httpx.Client) -> None:
    body = {"model": GEMMA, "messages": ASK, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}
    assert http.post("/v1/chat/completions", json=body).json()["error"]["param"] == "tool_choice"


def test_response_format_json_schema_output_validates(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"},
                                                "capital": {"type": "boolean"}},
              "required": ["city", "population", "capital"], "additionalProperties": False}
    for seed in (1, 2):
        completion = client.chat.completions.create(
            model=GEMMA, messages=[{"role": "user", "content": "Describe Paris as JSON."}], temperature=0.7, seed=seed,
            max_tokens=500, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})  # type: ignore[arg-type]
        assert completion.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(completion.choices[0].message.content or ""), schema)


def test_response_format_json_object_is_an_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=GEMMA, messages=[{"role": "user", "content": "Give me a JSON object."}], max_tokens=200, temperature=0,  # type: ignore[arg-type]
        response_format={"type": "json_object"}, logit_bias={"1": -100, "106": -100})
    content = completion.choices[0].message.content or ""
    assert completion.choices[0].finish_reason in ("stop", "length")
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
