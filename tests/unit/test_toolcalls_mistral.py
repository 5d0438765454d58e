"""Mistral V7 ("V7-tekken", Mistral-Small-24B-Instruct-2501) native tool calling: prompt goldens, parser, call ids.

The prompt goldens were checked against mistral-common's `InstructTokenizerV7` (v1.5.4, the release current with
Mistral Small 3) and its official `v7.jinja` chat template.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faisca.chat.toolcalls import (
    MistralParser,
    ParsedCallArguments,
    ParsedCallStart,
    ParsedEvent,
    ParsedReasoning,
    ParsedText,
    mistral_prompt,
    new_call_id,
    nine_char_id,
)
from faisca.errors import InvalidRequest
from faisca.types import ImagePart, Message, TextPart, Tool, ToolCall

GOLDEN = Path(__file__).parent / "golden" / "mistral"

WEATHER = Tool(
    "get_weather",
    "Current weather in a city.",
    '{"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum":'
    ' ["celsius", "fahrenheit"]}}, "required": ["location"]}',
)
NOW = Tool("current_time", "The current time.")

PROMPT_SHAPES: dict[str, tuple[list[Message], list[Tool]]] = {
    "user": ([Message("user", "Hello!")], []),
    "system-user-tools": (
        [Message("system", "You are a helpful assistant."), Message("user", "What is the weather in Paris?")],
        [WEATHER, NOW],
    ),
    "tool-turn": (
        [
            Message("system", "You are a helpful assistant."),
            Message("user", "What is the weather in London and in 東京?"),
            Message(
                "assistant",
                None,
                (
                    ToolCall("call_abc123", "get_weather", '{"location": "London"}'),
                    ToolCall("a1B2c3D4e", "get_weather", '{"location": "東京", "unit": "celsius"}'),
                ),
            ),
            Message("tool", "15°C, cloudy", tool_call_id="call_abc123"),
            Message("tool", '{"temperature": 22, "sky": "sunny"}', tool_call_id="a1B2c3D4e"),
            Message("assistant", "London: 15°C and cloudy; 東京: 22°C and sunny."),
            Message("user", "And what time is it?"),
        ],
        [WEATHER, NOW],
    ),
}


def golden_text(name: str) -> str:
    with open(GOLDEN / name, encoding="utf-8", newline="") as f:
        return f.read()


def golden_json(name: str) -> Any:
    return json.loads(golden_text(name))


def fold(events: list[ParsedEvent]) -> tuple[str, list[tuple[str, str]]]:
    """(text, [(name, arguments)]): what a client ends up with, however the events were split."""
    text = ""
    calls: dict[int, list[str]] = {}
    for event in events:
        assert not isinstance(event, ParsedReasoning)
        if isinstance(event, ParsedText):
            text += event.text
        elif isinstance(event, ParsedCallStart):
            assert event.call_index == len(calls)
            calls[event.call_index] = [event.name, ""]
        elif isinstance(event, ParsedCallArguments):
            calls[event.call_index][1] += event.text
    return text, [(name, arguments) for name, arguments in calls.values()]


def parse(chunks: list[str]) -> tuple[str, list[tuple[str, str]]]:
    parser = MistralParser()
    events: list[ParsedEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.finish()
    return fold(events)


# --- The prompt


@pytest.mark.parametrize("shape", sorted(PROMPT_SHAPES))
def test_prompt_renders_golden(shape: str) -> None:
    messages, tools = PROMPT_SHAPES[shape]
    assert mistral_prompt(messages, tools) == golden_text(f"{shape}.txt")


def test_tools_go_before_the_last_user_turn_only() -> None:
    prompt = mistral_prompt(PROMPT_SHAPES["tool-turn"][0], [NOW])
    assert prompt.count("[AVAILABLE_TOOLS]") == 1
    assert prompt.endswith(
        '[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "current_time", "description": "The current'
        ' time.", "parameters": {"type": "object", "properties": {}}}}][/AVAILABLE_TOOLS][INST]And what time is it?'
        "[/INST]"
    )


def test_call_and_result_ids_match_after_mapping() -> None:
    prompt = mistral_prompt(PROMPT_SHAPES["tool-turn"][0], [])
    mapped = nine_char_id("call_abc123")
    assert f'"id": "{mapped}"' in prompt
    assert f"[TOOL_RESULTS]{mapped}[TOOL_CONTENT]15°C, cloudy[/TOOL_RESULTS]" in prompt
    assert '"id": "a1B2c3D4e"' in prompt  # already a valid id: kept


def test_text_parts_are_joined_and_images_refused() -> None:
    assert mistral_prompt([Message("user", (TextPart("a"), TextPart("b")))], []) == "<s>[INST]ab[/INST]"
    with pytest.raises(InvalidRequest):
        mistral_prompt([Message("user", (ImagePart("data:image/png;base64,AAAA"),))], [])


def test_tool_message_without_call_id_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        mistral_prompt([Message("user", "x"), Message("tool", "result")], [])


def test_custom_special_tokens() -> None:
    messages = [Message("user", "Hi"), Message("assistant", "Hello "), Message("user", "Bye")]
    assert mistral_prompt(messages, [], bos_token="", eos_token="<eos>") == "[INST]Hi[/INST]Hello<eos>[INST]Bye[/INST]"


# --- Call ids


def test_new_call_id_has_nine_alphanumerics() -> None:
    assert re.fullmatch(r"[a-zA-Z0-9]{9}", new_call_id())
    assert new_call_id(random.Random(7)) == new_call_id(random.Random(7))


@pytest.mark.parametrize("foreign", ["call_abc123", "3f2b8c1e-8d9a-4f5e-9b7c-1a2b3c4d5e6f", "", "x", "日本語のid"])
def test_nine_char_id_maps_foreign_ids_deterministically(foreign: str) -> None:
    mapped = nine_char_id(foreign)
    assert re.fullmatch(r"[a-zA-Z0-9]{9}", mapped)
    assert nine_char_id(foreign) == mapped
    assert nine_char_id(mapped) == mapped


def test_nine_char_id_keeps_valid_ids_and_separates_others() -> None:
    assert nine_char_id("a1B2c3D4e") == "a1B2c3D4e"
    assert nine_char_id("call_1") != nine_char_id("call_2")


# --- The parser


@pytest.mark.parametrize("case", sorted(golden_json("parse.json")))
def test_parses_golden(case: str) -> None:
    expected = golden_json("parse.json")[case]
    want = (expected["text"], [tuple(call) for call in expected["calls"]])
    assert parse([expected["output"]]) == want
    assert parse(list(expected["output"])) == want  # one character at a time


def test_text_streams_holding_back_a_possible_marker() -> None:
    parser = MistralParser()
    assert parser.feed("Checking [TOOL") == [ParsedText("Checking ")]
    assert parser.feed('_CALLS][{"name": "current_time", ') == []
    assert parser.feed('"arguments": {}}]') == [ParsedCallStart(0, "current_time"), ParsedCallArguments(0, "{}")]
    assert parser.finish() == []


def test_held_back_prefix_is_flushed_at_finish() -> None:
    parser = MistralParser()
    assert parser.feed("see [TOOL_") == [ParsedText("see ")]
    assert parser.finish() == [ParsedText("[TOOL_")]


# --- Any split of the output parses as the whole does

JSON_PIECES = st.sampled_from([*'aZ 09"\\{}[]:,\n\té日本🎉', "[TOOL_CALLS]", "\u2028"])
JSON_TEXT = st.lists(JSON_PIECES, max_size=8).map("".join)
TEXT_CHARS = st.sampled_from(list("aT [_OLCAS\n.é日本🎉{}\"\\"))
ARGUMENTS = st.dictionaries(
    st.text(st.sampled_from(list('ab é日🎉"\\[]')), max_size=6),
    st.one_of(st.integers(-(10**6), 10**6), JSON_TEXT, st.booleans(), st.none()),
    max_size=3,
)


@st.composite
def mistral_outputs(draw: st.DrawFn) -> tuple[str, tuple[str, list[tuple[str, str]]] | None]:
    """A model output, and its folded parse where it is well formed (None for noise)."""
    kind = draw(st.sampled_from(["calls", "text", "noise"]))
    if kind == "noise":
        pieces = st.sampled_from([*'[TOOL_CALLS]{}"\\ \n日🎉é', "[TOOL_CALLS]", '[{"name": "x"}]'])
        return "".join(draw(st.lists(pieces, max_size=40))), None
    text = draw(st.text(TEXT_CHARS, max_size=30))
    if kind == "text":
        return text, (text, [])
    ascii_only = draw(st.booleans())
    calls, expected = [], []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True))
        arguments = draw(ARGUMENTS)
        as_string = draw(st.booleans())
        calls.append({"name": name, "arguments": json.dumps(arguments) if as_string else arguments})
        expected.append((name, json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))))
    output = text + "[TOOL_CALLS]" + json.dumps(calls, ensure_ascii=ascii_only)
    return output, (text, expected)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_split_parses_like_the_whole(data: st.DataObject) -> None:
    output, expected = data.draw(mistral_outputs())
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(output)), max_size=12))))
    chunks = [output[start:end] for start, end in zip([0, *cuts], [*cuts, len(output)])]
    whole = parse([output])
    assert parse(chunks) == whole
    if expected is not None:
        assert whole == expected
