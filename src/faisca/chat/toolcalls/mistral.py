"""Native tool calling for Mistral models with tokenizer V7 ("V7-tekken"; Mistral-Small-24B-Instruct-2501).

The prompt, as mistral-common's `InstructTokenizerV7` encodes it (bracketed names are single special tokens):

    <s>[SYSTEM_PROMPT]system[/SYSTEM_PROMPT]
    [INST]earlier user turn[/INST]assistant answer</s>
    [AVAILABLE_TOOLS][{"type": "function", "function": {"name": …, "description": …, …}}][/AVAILABLE_TOOLS]
    [INST]last user turn[/INST]
    [TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "London"}, "id": "a1B2c3D4e"}]</s>
    [TOOL_RESULTS]a1B2c3D4e[TOOL_CONTENT]result text[/TOOL_RESULTS]

(one line here per turn; the real prompt has no newlines between them). The tools go just before the *last* user
turn; a system message renders where it stands; call ids must be 9 characters from [a-zA-Z0-9]; a tool result is its
call id and raw content (V3's `{"content": …, "call_id": …}` JSON was replaced by `[TOOL_CONTENT]` in V7).

The model answers with text, or with `[TOOL_CALLS]` and a JSON array of `{"name": …, "arguments": {…}}` objects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from faisca.chat.toolcalls.base import (
    JsonValueScanner,
    ParsedCallArguments,
    ParsedCallStart,
    ParsedEvent,
    ParsedText,
    StateMachineParser,
    nine_char_id,
    partial_marker_length,
)
from faisca.errors import InvalidRequest
from faisca.types import ContentPart, Message, TextPart, Tool

TOOL_CALLS = "[TOOL_CALLS]"


def _text(content: str | tuple[ContentPart, ...] | None, role: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if any(not isinstance(part, TextPart) for part in content):
        raise InvalidRequest(f"this model takes text only in {role} messages", param="messages")
    return "".join(part.text for part in content if isinstance(part, TextPart))


def _json_or_text(text: str) -> Any:
    """mistral-common's `_parse_json_content`: the parsed JSON, or the text itself if it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _tools_json(tools: Sequence[Tool]) -> str:
    listed = [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": json.loads(tool.parameters_json),
            },
        }
        for tool in tools
    ]
    return json.dumps(listed, ensure_ascii=False)


def _assistant(message: Message, eos_token: str) -> str:
    text = _text(message.content, "assistant").rstrip(" ")
    if not text and not message.tool_calls:
        raise InvalidRequest("an assistant message needs content or tool calls", param="messages")
    if message.tool_calls:
        calls = [
            {"name": call.name, "arguments": _json_or_text(call.arguments_json), "id": nine_char_id(call.id)}
            for call in message.tool_calls
        ]
        text += TOOL_CALLS + json.dumps(calls, ensure_ascii=False)
    return text + eos_token


def mistral_prompt(
    messages: Sequence[Message], tools: Sequence[Tool], *, bos_token: str = "<s>", eos_token: str = "</s>"
) -> str:
    """The V7 prompt for `messages` with `tools` available, ending where the model's answer begins."""
    last_user = max((index for index, message in enumerate(messages) if message.role == "user"), default=-1)
    parts = [bos_token]
    for index, message in enumerate(messages):
        if message.role == "system":
            parts.append(f"[SYSTEM_PROMPT]{_text(message.content, 'system')}[/SYSTEM_PROMPT]")
        elif message.role == "user":
            if index == last_user and tools:
                parts.append(f"[AVAILABLE_TOOLS]{_tools_json(tools)}[/AVAILABLE_TOOLS]")
            parts.append(f"[INST]{_text(message.content, 'user')}[/INST]")
        elif message.role == "assistant":
            parts.append(_assistant(message, eos_token))
        else:
            if message.tool_call_id is None:
                raise InvalidRequest("a tool message needs the tool_call_id it answers", param="messages")
            call_id = nine_char_id(message.tool_call_id)
            parts.append(f"[TOOL_RESULTS]{call_id}[TOOL_CONTENT]{_text(message.content, 'tool')}[/TOOL_RESULTS]")
    return "".join(parts)


def _call_arguments(arguments: Any) -> str:
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments  # not JSON: passed on as the model wrote it
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))


def _parse_calls(text: str) -> list[tuple[str, str]] | None:
    """(name, arguments JSON) for each call in a `[TOOL_CALLS]` array, or None if it is not one."""
    try:
        calls = json.loads(text)
    except ValueError:
        return None
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list) or not calls:
        return None
    parsed = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return None
        parsed.append((call["name"], _call_arguments(call.get("arguments"))))
    return parsed


class MistralParser(StateMachineParser):
    """Parses V7 output: text streams as is (holding back a possible start of `[TOOL_CALLS]`); after `[TOOL_CALLS]`
    the JSON array is buffered until complete, then each call comes out whole. Whitespace right after an array is
    dropped; a later `[TOOL_CALLS]` starts more calls. An array cut off at the end (or not a list of named calls)
    comes out as raw text, marker included.
    """

    def __init__(self) -> None:
        super().__init__("text")
        self._raw = ""  # "[TOOL_CALLS]" and the whitespace after it
        self._array = ""  # the array's text so far
        self._scanner = JsonValueScanner()
        self._calls = 0

    def _step(self, state: str, events: list[ParsedEvent], final: bool) -> None:
        match state:
            case "text":
                self._step_text(events, final)
            case "before_array":
                self._step_before_array(events, final)
            case "array":
                self._step_array(events, final)
            case _:
                self._step_after_array()

    def _step_text(self, events: list[ParsedEvent], final: bool) -> None:
        pending = self._pending
        start = pending.find(TOOL_CALLS)
        if start >= 0:
            text = pending[:start]
            self._raw = TOOL_CALLS
            self._pending = pending[start + len(TOOL_CALLS) :]
            self._state = "before_array"
        else:
            held = 0 if final else partial_marker_length(pending, TOOL_CALLS)
            text = pending[: len(pending) - held]
            self._pending = pending[len(pending) - held :]
        if text:
            events.append(ParsedText(text))

    def _step_before_array(self, events: list[ParsedEvent], final: bool) -> None:
        stripped = self._pending.lstrip()
        if stripped[:1] in ("[", "{"):
            self._raw += self._pending[: len(self._pending) - len(stripped)]
            self._pending = stripped
            self._array = ""
            self._scanner = JsonValueScanner()
            self._state = "array"
        elif stripped or final:
            self._give_back(events)

    def _step_array(self, events: list[ParsedEvent], final: bool) -> None:
        pending = self._pending
        end = self._scanner.feed(pending)
        if end is None:
            self._array += pending
            self._pending = ""
            if final:
                self._give_back(events)
            return
        self._array += pending[:end]
        self._pending = pending[end:]
        calls = _parse_calls(self._array)
        if calls is None:
            self._give_back(events)
            return
        for name, arguments in calls:
            events.append(ParsedCallStart(self._calls, name))
            events.append(ParsedCallArguments(self._calls, arguments))
            self._calls += 1
        self._raw = ""
        self._array = ""
        self._state = "after_array"

    def _step_after_array(self) -> None:
        stripped = self._pending.lstrip()
        self._pending = stripped
        if stripped:
            self._state = "text"

    def _give_back(self, events: list[ParsedEvent]) -> None:
        """Not a call array after all: the marker and what followed are text."""
        events.append(ParsedText(self._raw + self._array))
        self._raw = ""
        self._array = ""
        self._state = "text"
