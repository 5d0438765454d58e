"""Prompt-based (ReAct) tool calling, for models without native function calling (Gemma 3).

The prompt is Dify's English ReAct prompt: the tools are listed as JSON in the system prompt and the model is asked
to answer in this format, one action per answer:

    Thought: consider previous and subsequent steps
    Action:
    ```
    {"action": "get_weather", "action_input": {"location": "London"}}
    ```

An action named "Final Answer" carries the answer to the user in `action_input`; any other action is a tool call.
The tool's result goes back to the model as a user turn `Observation: <result>`.

`ReactParser` also accepts `Action: {json}` on one line, ```` ```json ```` fences and `"action_name"` in place of
`"action"` (all seen from real models); output that starts with neither "Thought:" nor "Action:" is a plain answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from faisca.chat.toolcalls.base import (
    JsonValueScanner,
    ParsedCallArguments,
    ParsedCallStart,
    ParsedEvent,
    ParsedReasoning,
    ParsedText,
    StateMachineParser,
    ascii_lower,
    partial_marker_length,
)
from faisca.types import ContentPart, Message, TextPart, Tool

_PROMPT_HEAD = "Respond to the human as helpfully and accurately as possible. \n\n"
_PROMPT_TOOLS = "\n\nYou have access to the following tools:\n\n"
_PROMPT_NAMES = (
    "\n\nUse a json blob to specify a tool by providing an action key (tool name) and an action_input key"
    ' (tool input).\nValid "action" values: "Final Answer" or '
)
_PROMPT_TAIL = (
    "\n\n"
    "Provide only ONE action per $JSON_BLOB, as shown:\n"
    "\n"
    "```\n"
    "{\n"
    '  "action": $TOOL_NAME,\n'
    '  "action_input": $ACTION_INPUT\n'
    "}\n"
    "```\n"
    "\n"
    "Follow this format:\n"
    "\n"
    "Question: input question to answer\n"
    "Thought: consider previous and subsequent steps\n"
    "Action:\n"
    "```\n"
    "$JSON_BLOB\n"
    "```\n"
    "Observation: action result\n"
    "... (repeat Thought/Action/Observation N times)\n"
    "Thought: I know what to respond\n"
    "Action:\n"
    "```\n"
    "{\n"
    '  "action": "Final Answer",\n'
    '  "action_input": "Final response to human"\n'
    "}\n"
    "```\n"
    "\n"
    "Begin! Reminder to ALWAYS respond with a valid json blob of a single action. Use tools if necessary."
    " Respond directly if appropriate. Format is Action:```$JSON_BLOB```then Observation:.\n"
)

FINAL_ANSWER = "Final Answer"
_DEFAULT_THOUGHT = "I should call a tool."

_THOUGHT = "thought:"
_ACTION = "action:"
_ACTION_ON_NEW_LINE = "\n" + _ACTION
_ACTION_LINE = re.compile(re.escape(_ACTION_ON_NEW_LINE), re.IGNORECASE | re.ASCII)
# What may come between "Action:" and the JSON blob: spaces, newlines, an optional ``` fence with a language tag.
_BEFORE_BLOB = re.compile(r"\s*(?:```[\w-]*\s*)?(?=\{)")
_BEFORE_BLOB_SO_FAR = re.compile(r"\s*(?:`{0,3}|```[\w-]*\s*)")


def react_system_prompt(tools: Sequence[Tool], instruction: str = "") -> str:
    """Dify's ReAct system prompt for `tools`, with `instruction` (the client's system prompt) in its slot."""
    listed = [
        {"name": tool.name, "description": tool.description, "parameters": json.loads(tool.parameters_json)}
        for tool in tools
    ]
    names = ", ".join(tool.name for tool in tools)
    return (
        _PROMPT_HEAD
        + instruction
        + _PROMPT_TOOLS
        + json.dumps(listed, ensure_ascii=False)
        + _PROMPT_NAMES
        + names
        + _PROMPT_TAIL
    )


def _text(content: str | tuple[ContentPart, ...] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content if isinstance(part, TextPart))


def _action_input(arguments_json: str) -> Any:
    try:
        return json.loads(arguments_json)
    except ValueError:
        return arguments_json


def _assistant_actions(message: Message) -> str:
    thought = _text(message.content) or _DEFAULT_THOUGHT
    blocks = [
        "Action:\n```\n"
        + json.dumps({"action": call.name, "action_input": _action_input(call.arguments_json)}, ensure_ascii=False)
        + "\n```"
        for call in message.tool_calls
    ]
    return f"Thought: {thought}\n" + "\n".join(blocks)


def _merge_user(first: Message, second: Message) -> Message:
    """Two adjacent user turns as one (Gemma's template insists on user/assistant alternation)."""
    if isinstance(first.content, tuple) or isinstance(second.content, tuple):
        parts: list[ContentPart] = []
        for message in (first, second):
            if isinstance(message.content, tuple):
                parts.extend(message.content)
            elif message.content:
                parts.append(TextPart(message.content))
            if message is first:
                parts.append(TextPart("\n\n"))
        return Message("user", tuple(parts))
    return Message("user", f"{_text(first.content)}\n\n{_text(second.content)}")


def react_messages(messages: Sequence[Message], tools: Sequence[Tool]) -> list[Message]:
    """`messages` rewritten for a model without tool support, with the ReAct system prompt for `tools`.

    The client's system prompt becomes the ReAct prompt's instruction; assistant tool calls become Thought/Action
    text; each run of tool results becomes one user turn of `Observation: …` lines.
    """
    instruction = "\n\n".join(_text(message.content) for message in messages if message.role == "system")
    result: list[Message] = [Message("system", react_system_prompt(tools, instruction))]
    observations: list[str] = []
    merge_next_user = False
    for message in messages:
        if message.role == "tool":
            observations.append(f"Observation: {_text(message.content)}")
            continue
        if observations:
            result.append(Message("user", "\n".join(observations)))
            observations = []
            merge_next_user = True
        if message.role == "system":
            continue
        if message.role == "user" and merge_next_user:
            result[-1] = _merge_user(result[-1], message)
        elif message.role == "assistant" and message.tool_calls:
            result.append(Message("assistant", _assistant_actions(message)))
        else:
            result.append(message)
        merge_next_user = False
    if observations:
        result.append(Message("user", "\n".join(observations)))
    return result


def _call_arguments(action_input: Any) -> str:
    if isinstance(action_input, str):
        try:
            action_input = json.loads(action_input)
        except ValueError:
            return "{}"
    if not isinstance(action_input, dict):
        return "{}"
    return json.dumps(action_input, ensure_ascii=False, separators=(",", ":"))


class ReactParser(StateMachineParser):
    """Parses ReAct output: "Thought:" text as reasoning, then one Action blob (a tool call or the final answer).

    The thought streams as it comes (holding back what could be the start of "Action:", which must begin a line);
    the blob is buffered until its JSON is complete. Text after the blob (a hallucinated "Observation:") is dropped.
    Output in neither form is a plain answer, streamed as text; a blob cut off at the end (or not valid JSON) comes
    out as raw text.
    """

    def __init__(self) -> None:
        super().__init__("start")
        self._raw_action = ""  # "Action:" and what followed it: the text to give back if the blob goes wrong
        self._blob = ""
        self._scanner = JsonValueScanner()
        self._calls = 0
        self._thought_started = False  # some reasoning went out: "Action:" now counts only at a line's start

    def _step(self, state: str, events: list[ParsedEvent], final: bool) -> None:
        match state:
            case "start":
                self._step_start(final)
            case "plain":
                self._step_plain(events)
            case "thought_lead":
                self._step_thought_lead()
            case "thought":
                self._step_thought(events, final)
            case "action":
                self._step_action(events, final)
            case "blob":
                self._step_blob(events, final)
            case _:
                self._pending = ""  # "done": what follows the action is dropped

    # Each step consumes what it can decide on now and may change state; `_run` repeats while the state changes.

    def _step_start(self, final: bool) -> None:
        stripped = self._pending.lstrip()
        head = ascii_lower(stripped[: len(_THOUGHT)])
        if head.startswith(_THOUGHT):
            self._pending = stripped[len(_THOUGHT) :]
            self._state = "thought_lead"
        elif head.startswith(_ACTION):
            self._raw_action = stripped[: len(_ACTION)]
            self._pending = stripped[len(_ACTION) :]
            self._state = "action"
        elif not final and (_THOUGHT.startswith(head) or _ACTION.startswith(head)):
            return  # not enough text to tell yet (possibly none at all)
        else:
            self._state = "plain"

    def _step_plain(self, events: list[ParsedEvent]) -> None:
        if self._pending:
            events.append(ParsedText(self._pending))
            self._pending = ""

    def _step_thought_lead(self) -> None:
        stripped = self._pending.lstrip()
        self._pending = stripped
        if stripped:
            self._state = "thought"

    def _step_thought(self, events: list[ParsedEvent], final: bool) -> None:
        pending = self._pending
        if not self._thought_started and ascii_lower(pending[: len(_ACTION)]) == _ACTION:
            self._raw_action = pending[: len(_ACTION)]  # "Thought:" with no thought, then "Action:"
            self._pending = pending[len(_ACTION) :]
            self._state = "action"
            return
        found = _ACTION_LINE.search(pending)
        if found is not None:
            reasoning = pending[: found.start()].rstrip()
            self._raw_action = found.group()[1:]
            self._pending = pending[found.end() :]
            self._state = "action"
        elif final:
            reasoning = pending.rstrip()
            self._pending = ""
        elif not self._thought_started and _ACTION.startswith(ascii_lower(pending)):
            return  # the "Action:" right after "Thought:" may be on its way
        else:
            # Hold back a possible start of "\nAction:" and the whitespace before it (stripped if "Action:" comes).
            held = partial_marker_length(pending, _ACTION_ON_NEW_LINE, ignore_case=True)
            cut = len(pending[: len(pending) - held].rstrip())
            reasoning = pending[:cut]
            self._pending = pending[cut:]
        if reasoning:
            events.append(ParsedReasoning(reasoning))
            self._thought_started = True

    def _step_action(self, events: list[ParsedEvent], final: bool) -> None:
        pending = self._pending
        lead = _BEFORE_BLOB.match(pending)
        if lead is not None:
            self._raw_action += lead.group()
            self._pending = pending[lead.end() :]
            self._state = "blob"
        elif final or not _BEFORE_BLOB_SO_FAR.fullmatch(pending):
            self._give_back(events)

    def _step_blob(self, events: list[ParsedEvent], final: bool) -> None:
        pending = self._pending
        end = self._scanner.feed(pending)
        if end is None:
            self._blob += pending
            self._pending = ""
            if final:
                self._give_back(events)
            return
        self._blob += pending[:end]
        self._pending = pending[end:]
        parsed = self._parse_blob()
        if parsed is None:
            self._give_back(events)
            return
        events.extend(parsed)
        self._pending = ""
        self._state = "done"

    def _give_back(self, events: list[ParsedEvent]) -> None:
        """Not the format after all: what followed "Action:" is answer text, as is the rest of the output."""
        events.append(ParsedText(self._raw_action + self._blob))
        self._raw_action = ""
        self._blob = ""
        self._state = "plain"

    def _parse_blob(self) -> list[ParsedEvent] | None:
        try:
            blob = json.loads(self._blob)
        except ValueError:
            return None
        if not isinstance(blob, dict):
            return None
        action = blob.get("action", blob.get("action_name"))
        if not isinstance(action, str):
            return None
        action_input = blob.get("action_input")
        if action.strip().lower() == FINAL_ANSWER.lower():
            if action_input is None:
                return []
            answer = action_input if isinstance(action_input, str) else json.dumps(action_input, ensure_ascii=False)
            return [ParsedText(answer)] if answer else []
        index = self._calls
        self._calls += 1
        return [ParsedCallStart(index, action.strip()), ParsedCallArguments(index, _call_arguments(action_input))]
