"""Prompt-based (ReAct) tool calling: Dify's system prompt byte for byte, the rewritten conversation, the parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faisca.chat.toolcalls import (
    ParsedCallArguments,
    ParsedCallStart,
    ParsedEvent,
    ParsedReasoning,
    ParsedText,
    ReactParser,
    react_messages,
    react_system_prompt,
)
from faisca.types import ImagePart, Message, TextPart, Tool, ToolCall

GOLDEN = Path(__file__).parent / "golden" / "react"
SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
SEED = SEEDS / "002_429932d6591ee8d0.txt"

# The five tools of the seed's request (Dify's time plugin), in its order.
SEED_TOOLS = [
    Tool(
        "current_time",
        "A tool for getting the current time.",
        '{"type": "object", "properties": {}, "required": []}',
    ),
    Tool(
        "localtime_to_timestamp",
        "A tool for localtime convert to timestamp",
        '{"type": "object", "properties": {"localtime": {"type": "string", "description": ""}, "timezone": {"type":'
        ' "string", "description": ""}}, "required": ["localtime"]}',
    ),
    Tool(
        "timestamp_to_localtime",
        "A tool for timestamp convert to localtime",
        '{"type": "object", "properties": {"timestamp": {"type": "number", "description": ""}, "timezone": {"type":'
        ' "string", "description": ""}}, "required": ["timestamp"]}',
    ),
    Tool(
        "timezone_conversion",
        "A tool to convert time to equivalent time zone",
        '{"type": "object", "properties": {"current_time": {"type": "string", "description": ""}, "current_timezone":'
        ' {"type": "string", "description": ""}, "target_timezone": {"type": "string", "description": ""}},'
        ' "required": ["current_time", "current_timezone", "target_timezone"]}',
    ),
    Tool(
        "weekday",
        "A tool for calculating the weekday of a given date by year, month and day.",
        '{"type": "object", "properties": {"year": {"type": "number", "description": ""}, "month": {"type": "number",'
        ' "description": ""}, "day": {"type": "number", "description": ""}}, "required": ["year", "month", "day"]}',
    ),
]

WEATHER = Tool(
    "get_weather",
    "Current weather in a city.",
    '{"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}',
)


def golden_text(name: str) -> str:
    with open(GOLDEN / name, encoding="utf-8", newline="") as f:
        return f.read()


def golden_json(name: str) -> Any:
    return json.loads(golden_text(name))


def fold(events: list[ParsedEvent]) -> tuple[str, str, list[tuple[str, str]]]:
    """(text, reasoning, [(name, arguments)]): what a client ends up with, however the events were split."""
    text, reasoning = "", ""
    calls: dict[int, list[str]] = {}
    for event in events:
        if isinstance(event, ParsedText):
            text += event.text
        elif isinstance(event, ParsedReasoning):
            reasoning += event.text
        elif isinstance(event, ParsedCallStart):
            assert event.call_index not in calls
            calls[event.call_index] = [event.name, ""]
        elif isinstance(event, ParsedCallArguments):
            calls[event.call_index][1] += event.text
    return text, reasoning, [(name, arguments) for name, arguments in calls.values()]


def parse(chunks: list[str]) -> tuple[str, str, list[tuple[str, str]]]:
    parser = ReactParser()
    events: list[ParsedEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.finish()
    return fold(events)


# --- The prompt


def test_system_prompt_matches_the_golden_copy_of_the_seed() -> None:
    assert react_system_prompt(SEED_TOOLS) == golden_text("system-prompt.txt")


def test_system_prompt_matches_the_seed_itself() -> None:
    if not SEED.is_file():
        pytest.skip("the seeds are not checked out next to this repository")
    seed = SEED.read_text(encoding="utf-8")
    request, _ = json.JSONDecoder().raw_decode(seed, seed.index('{\n  "model"'))
    assert react_system_prompt(SEED_TOOLS) == request["messages"][0]["content"]


def test_instruction_sits_between_the_first_sentence_and_the_tools() -> None:
    prompt = react_system_prompt([WEATHER], "Answer in French.")
    assert prompt.startswith(
        "Respond to the human as helpfully and accurately as possible. \n\nAnswer in French.\n\n"
        "You have access to the following tools:\n\n[{"
    )
    assert '\nValid "action" values: "Final Answer" or get_weather\n\n' in prompt


def tool_conversation() -> list[Message]:
    return [
        Message("system", "Answer briefly."),
        Message("user", "What is the weather in London and in 東京?"),
        Message(
            "assistant",
            None,
            (
                ToolCall("call_abc123", "get_weather", '{"location": "London"}'),
                ToolCall("call_def456", "get_weather", '{"location": "東京"}'),
            ),
        ),
        Message("tool", "15°C, cloudy", tool_call_id="call_abc123"),
        Message("tool", "22°C, sunny", tool_call_id="call_def456"),
        Message("assistant", "London: 15°C, cloudy. 東京: 22°C, sunny."),
        Message("user", "Thanks!"),
    ]


def as_json(messages: list[Message]) -> list[dict[str, Any]]:
    assert all(isinstance(message.content, str) and not message.tool_calls for message in messages)
    return [{"role": message.role, "content": message.content} for message in messages]


def test_conversation_with_tool_calls_renders_golden() -> None:
    assert as_json(react_messages(tool_conversation(), [WEATHER])) == golden_json("messages-tool-call.json")


def test_tool_results_become_one_user_turn_and_roles_alternate() -> None:
    messages = tool_conversation()[:5]  # ends on the tool results: the model's turn comes next
    rewritten = react_messages(messages, [WEATHER])
    assert [message.role for message in rewritten] == ["system", "user", "assistant", "user"]
    assert rewritten[-1].content == "Observation: 15°C, cloudy\nObservation: 22°C, sunny"


def test_without_a_system_message_one_is_added() -> None:
    rewritten = react_messages([Message("user", "Hi")], [WEATHER])
    assert rewritten[0] == Message("system", react_system_prompt([WEATHER]))
    assert rewritten[1:] == [Message("user", "Hi")]


def test_assistant_content_is_the_thought() -> None:
    call = ToolCall("abcdefghi", "get_weather", '{"location": "Paris"}')
    rewritten = react_messages(
        [Message("user", "Paris?"), Message("assistant", "I need the weather.", (call,))], [WEATHER]
    )
    assert rewritten[-1].content == (
        'Thought: I need the weather.\nAction:\n```\n{"action": "get_weather", "action_input": {"location":'
        ' "Paris"}}\n```'
    )


def test_observation_merges_with_a_following_user_turn_keeping_images() -> None:
    call = ToolCall("abcdefghi", "get_weather", "{}")
    image = ImagePart("data:image/png;base64,iVBORw0KGgo=")
    rewritten = react_messages(
        [
            Message("user", "Weather?"),
            Message("assistant", None, (call,)),
            Message("tool", "sunny"),
            Message("user", (image, TextPart("And this picture?"))),
        ],
        [WEATHER],
    )
    assert [message.role for message in rewritten] == ["system", "user", "assistant", "user"]
    assert rewritten[-1].content == (
        TextPart("Observation: sunny"),
        TextPart("\n\n"),
        image,
        TextPart("And this picture?"),
    )


# --- The parser


@pytest.mark.parametrize("case", sorted(golden_json("parse.json")))
def test_parses_golden(case: str) -> None:
    expected = golden_json("parse.json")[case]
    want = (expected["text"], expected["reasoning"], [tuple(call) for call in expected["calls"]])
    assert parse([expected["output"]]) == want
    assert parse(list(expected["output"])) == want  # one character at a time


def test_thought_streams_before_the_action_arrives() -> None:
    parser = ReactParser()
    assert parser.feed("Thought: I need the ") == [ParsedReasoning("I need the")]
    assert parser.feed("weather.\nAct") == [ParsedReasoning(" weather.")]
    assert parser.feed('ion:\n```\n{"action": "get_weather", ') == []
    assert parser.feed('"action_input": {"location": "Oslo"}}\n```\nObservation: rain') == [
        ParsedCallStart(0, "get_weather"),
        ParsedCallArguments(0, '{"location":"Oslo"}'),
    ]
    assert parser.finish() == []


def test_action_counts_only_at_the_start_of_a_line() -> None:
    output = 'Thought: I will take action: look it up.\nAction: {"action": "search", "action_input": {"q": "x"}}'
    assert parse([output]) == ("", "I will take action: look it up.", [("search", '{"q":"x"}')])


def test_action_right_after_an_empty_thought() -> None:
    output = 'Thought:\nAction:\n```\n{"action": "now", "action_input": {}}\n```'
    assert parse([output]) == ("", "", [("now", "{}")])
    assert parse(list(output)) == ("", "", [("now", "{}")])


def test_plain_answer_streams_at_once_after_the_first_characters() -> None:
    parser = ReactParser()
    assert parser.feed("Th") == []  # could still be "Thought:"
    assert parser.feed("e answer") == [ParsedText("The answer")]
    assert parser.feed(" is 4.") == [ParsedText(" is 4.")]
    assert parser.finish() == []


def test_finish_on_empty_output() -> None:
    assert parse([]) == ("", "", [])


# --- Any split of the output parses as the whole does

JSON_CHARS = st.sampled_from(list('aZ 09"\\{}[]:,`\n\té日本🎉') + ["\u00a0", "\u2028"])
THOUGHT_CHARS = st.sampled_from(list("aA tcoinT\n.é日本🎉{}[]\"\\`"))
ARGUMENTS = st.dictionaries(
    st.text(JSON_CHARS, max_size=6),
    st.one_of(st.integers(-(10**6), 10**6), st.text(JSON_CHARS, max_size=8), st.booleans(), st.none()),
    max_size=3,
)
LEADS = ["Action:\n```\n", "Action:\n```json\n", "Action: ", "Action:\n", "action:\n```\n"]
TAILS = ["", "\n```", "\n```\nObservation: it rained\n", "\n```\n\nThought: more"]


@st.composite
def react_outputs(draw: st.DrawFn) -> tuple[str, tuple[str, str, list[tuple[str, str]]] | None]:
    """A model output, and its folded parse where it is a well-formed ReAct answer (None for noise)."""
    kind = draw(st.sampled_from(["call", "final", "plain", "noise"]))
    if kind == "noise":
        pieces = st.sampled_from(
            [*'Thought:Action: `{}"\\\n日🎉é', "Thought:", "Action:", "```", '{"action": "x"}']
        )
        return "".join(draw(st.lists(pieces, max_size=40))), None
    if kind == "plain":
        text = draw(st.text(THOUGHT_CHARS, max_size=30).filter(lambda t: t.lstrip()[:1] not in ("T", "t", "A", "a")))
        return text, (text, "", [])
    thought = draw(st.text(THOUGHT_CHARS, max_size=30))
    lead = draw(st.sampled_from(LEADS))
    key = draw(st.sampled_from(["action", "action_name"]))
    ascii_only = draw(st.booleans())
    if kind == "call":
        name = draw(st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True))
        arguments = draw(ARGUMENTS)
        indent = draw(st.sampled_from([None, 2]))
        blob = json.dumps({key: name, "action_input": arguments}, ensure_ascii=ascii_only, indent=indent)
        result = ("", thought.strip(), [(name, json.dumps(arguments, ensure_ascii=False, separators=(",", ":")))])
    else:
        answer = draw(st.text(JSON_CHARS, max_size=20))
        blob = json.dumps({key: "Final Answer", "action_input": answer}, ensure_ascii=ascii_only)
        result = (answer, thought.strip(), [])
    lead_space, tail = draw(st.sampled_from(["", "\n", " "])), draw(st.sampled_from(TAILS))
    output = f"{lead_space}Thought: {thought}\n{lead}{blob}{tail}"
    return output, result


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_split_parses_like_the_whole(data: st.DataObject) -> None:
    output, expected = data.draw(react_outputs())
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(output)), max_size=12))))
    chunks = [output[start:end] for start, end in zip([0, *cuts], [*cuts, len(output)])]
    whole = parse([output])
    assert parse(chunks) == whole
    if expected is not None:
        assert whole == expected
