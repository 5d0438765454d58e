"""The grammars that constrain a model's output (llguidance's Lark dialect; `%json {schema}` embeds a schema).

ReAct output is constrained from the first token: a one-line thought, then one JSON action whose
`action_input` follows the chosen tool's parameters (or is the final answer's text). Mistral's native
format is constrained from `[TOOL_CALLS]` on, when a call is required.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from faisca.chat.structured import compact_json_schema, guarded_schema
from faisca.types import Tool, ToolChoice

FINAL_ANSWER = "Final Answer"
# A thought is one line; bounded so that even a small model gets to its action.
_THOUGHT = r"/[^\n`]{1,240}/"


def _tool_options(tools: Sequence[Tool], tool_choice: ToolChoice) -> list[Tool]:
    if tool_choice in ("auto", "required", "none"):
        return [] if tool_choice == "none" else list(tools)
    return [tool for tool in tools if tool.name == tool_choice]


def react_grammar(tools: Sequence[Tool], tool_choice: ToolChoice) -> str:
    """`Thought: …\\nAction:\\n```\\n{"action": …, "action_input": …}\\n```` with the actions `tool_choice` allows:
    the tools and "Final Answer" for auto, only tools for required, one tool when named, only "Final Answer"
    for none."""
    options = [
        {
            "type": "object",
            "properties": {"action": {"const": tool.name}, "action_input": guarded_schema(json.loads(tool.parameters_json))},
            "required": ["action", "action_input"],
            "additionalProperties": False,
        }
        for tool in _tool_options(tools, tool_choice)
    ]
    if tool_choice in ("auto", "none"):
        options.append({
            "type": "object",
            "properties": {"action": {"const": FINAL_ANSWER}, "action_input": {"type": "string"}},
            "required": ["action", "action_input"],
            "additionalProperties": False,
        })
    action = compact_json_schema({"anyOf": options})
    return (f'start: "Thought: " THOUGHT "\\nAction:\\n```\\n" action "\\n```"\n'
            f"THOUGHT: {_THOUGHT}\n"
            f"action: %json {json.dumps(action)}")


def mistral_calls_grammar(tools: Sequence[Tool], tool_choice: ToolChoice, *, parallel: bool) -> str:
    """`[TOOL_CALLS][{"name": …, "arguments": {…}}, …]` from the first token (for required or a named tool)."""
    call = {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": guarded_schema(json.loads(tool.parameters_json))},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for tool in _tool_options(tools, tool_choice)
        ]
    }
    calls = compact_json_schema({"type": "array", "items": call, "minItems": 1, **({} if parallel else {"maxItems": 1})})
    return f'start: "[TOOL_CALLS]" calls\ncalls: %json {json.dumps(calls)}'
