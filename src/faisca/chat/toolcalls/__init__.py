"""Tool calling: prompts that offer tools to a model, and parsers that find tool calls in what it writes.

Two formats: prompt-based ReAct (`react`, for models without native function calling, such as Gemma 3) and
Mistral's native V7 format (`mistral`, Mistral-Small-24B-Instruct-2501). Both parsers emit the same neutral events.
"""

from faisca.chat.toolcalls.base import (
    ParsedCallArguments,
    ParsedCallStart,
    ParsedEvent,
    ParsedReasoning,
    ParsedText,
    ToolCallParser,
    new_call_id,
    nine_char_id,
)
from faisca.chat.toolcalls.mistral import MistralParser, mistral_prompt
from faisca.chat.toolcalls.react import ReactParser, react_messages, react_system_prompt

__all__ = [
    "MistralParser",
    "ParsedCallArguments",
    "ParsedCallStart",
    "ParsedEvent",
    "ParsedReasoning",
    "ParsedText",
    "ReactParser",
    "ToolCallParser",
    "mistral_prompt",
    "new_call_id",
    "nine_char_id",
    "react_messages",
    "react_system_prompt",
]
