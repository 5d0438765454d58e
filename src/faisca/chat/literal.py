"""A client's text never becomes control tokens.

The engine tokenizes a rendered prompt with special tokens parsed: the template's own markup (`<start_of_turn>`,
`[INST]`) must become the model's control tokens. A message holding such a token's text would then forge markup:
`<start_of_turn>model` in a user message would open a turn of the model's. So before the template runs, every
control token's text in what the client sent (message text, tool calls, tool definitions) is wrapped in
`LITERAL_OPEN … LITERAL_CLOSE`, which the engine tokenizes as plain text. A request without any (nearly all of them)
is left as it is, so its prompt tokenizes exactly as before. Only the prompt is escaped: grammars are built from the
request as sent. A raw prompt (Ollama's `raw`, `/v1/completions`) is the client's own markup and is not touched.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from typing import Any

from faisca.types import (
    LITERAL_CLOSE, LITERAL_OPEN, ChatRequest, ContentPart, Message, TextPart, Tool, ToolCall,
)


class ControlTextEscaper:
    """Finds a model's control-token texts in client strings. Looks only where a text's first character is, and
    compares a slice per distinct length: linear in the text, whatever the size of the vocabulary."""

    def __init__(self, control_texts: Iterable[str]) -> None:
        self._texts: dict[str, dict[int, frozenset[str]]] = {}  # first character -> length -> texts
        grouped: dict[str, dict[int, set[str]]] = {}
        for text in control_texts:
            if text:
                grouped.setdefault(text[0], {}).setdefault(len(text), set()).add(text)
        for first, by_length in grouped.items():
            self._texts[first] = {length: frozenset(texts) for length, texts in sorted(by_length.items(), reverse=True)}
        self._first_characters = re.compile(f"[{''.join(re.escape(first) for first in self._texts)}]" if self._texts
                                            else "(?!)")

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where control-token texts stand in `text`, left to right, the longest at each place, not overlapping."""
        found: list[tuple[int, int]] = []
        position = 0
        while (candidate := self._first_characters.search(text, position)) is not None:
            at = candidate.start()
            length = next((length for length, texts in self._texts[text[at]].items()
                           if text[at:at + length] in texts), 0)
            if length:
                found.append((at, at + length))
                position = at + length
            else:
                position = at + 1
        return found

    def escape(self, text: str) -> str:
        spans = self.spans(text)
        if not spans:
            return text
        pieces, last = [], 0
        for start, end in spans:
            pieces += [text[last:start], LITERAL_OPEN, text[start:end], LITERAL_CLOSE]
            last = end
        pieces.append(text[last:])
        return "".join(pieces)

    def escape_request(self, request: ChatRequest) -> ChatRequest:
        """The request with its client text escaped; the same request when there is nothing to escape."""
        if not self._texts or request.raw_prompt is not None:
            return request
        messages = tuple(self._message(message) for message in request.messages)
        tools = tuple(self._tool(tool) for tool in request.tools)
        if messages == request.messages and tools == request.tools:
            return request
        return dataclasses.replace(request, messages=messages, tools=tools)

    def _message(self, message: Message) -> Message:
        content = message.content
        if isinstance(content, str):
            content = self.escape(content)
        elif isinstance(content, tuple):
            content = tuple(self._part(part) for part in content)
        calls = tuple(ToolCall(call.id, call.name, self._json(call.arguments_json)) for call in message.tool_calls)
        escaped = dataclasses.replace(message, content=content, tool_calls=calls)
        return message if escaped == message else escaped

    def _part(self, part: ContentPart) -> ContentPart:
        return TextPart(self.escape(part.text)) if isinstance(part, TextPart) else part

    def _tool(self, tool: Tool) -> Tool:
        # names are identifiers (checked against a pattern) and are also what a grammar makes the model write
        return Tool(tool.name, self.escape(tool.description), self._json(tool.parameters_json))

    def _json(self, text: str) -> str:
        """JSON text with its strings escaped, written again without \\u escapes (a `\\u003c` would come back as `<`
        where a template reads and writes the value); not JSON: escaped as text."""
        try:
            value = json.loads(text)
        except ValueError:
            return self.escape(text)
        escaped = self._value(value)
        return text if escaped == value else json.dumps(escaped, ensure_ascii=False)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.escape(value)
        if isinstance(value, list):
            return [self._value(item) for item in value]
        if isinstance(value, dict):
            return {self.escape(key): self._value(item) for key, item in value.items()}
        return value
