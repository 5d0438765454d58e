"""What every tool-call format shares: the neutral events a parser emits, the parser protocol, call ids.

A parser turns a model's raw output text, fed piece by piece as it is generated, into `ParsedEvent`s: plain answer
text, reasoning text, and tool calls (a `ParsedCallStart` with the function's name, then its arguments JSON in one or
more `ParsedCallArguments` fragments). Feeding the same output in any split gives the same text, reasoning and calls.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
from dataclasses import dataclass
from typing import Protocol, TypeAlias

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ID_LENGTH = 9
_NINE_CHAR_ID = re.compile(r"[a-zA-Z0-9]{9}")


@dataclass(frozen=True)
class ParsedText:
    """Answer text, for the client's `content`."""

    text: str


@dataclass(frozen=True)
class ParsedReasoning:
    """The model's reasoning (a ReAct "Thought"), for the client's `reasoning_content`."""

    text: str


@dataclass(frozen=True)
class ParsedCallStart:
    """A tool call begins; its arguments follow in `ParsedCallArguments` with the same `call_index`."""

    call_index: int
    name: str


@dataclass(frozen=True)
class ParsedCallArguments:
    """A fragment of a call's arguments: all fragments concatenated are compact JSON, `{}` for no arguments."""

    call_index: int
    text: str


ParsedEvent: TypeAlias = ParsedText | ParsedReasoning | ParsedCallStart | ParsedCallArguments


class ToolCallParser(Protocol):
    """Parses one choice's output. `feed` each piece as it is generated, then `finish` once at the end."""

    def feed(self, text: str) -> list[ParsedEvent]: ...

    def finish(self) -> list[ParsedEvent]: ...


def new_call_id(rng: random.Random | None = None) -> str:
    """A fresh call id: 9 characters from [a-zA-Z0-9], the shape Mistral's tokenizers require (and OpenAI accepts)."""
    if rng is None:
        return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
    return "".join(rng.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def nine_char_id(foreign_id: str) -> str:
    """`foreign_id` as a 9-character [a-zA-Z0-9] id: kept if it already is one, else base62 of its sha256.

    Deterministic, so a call id the client sends back (`call_abc…`, a UUID) maps to the same id in the assistant's
    call and in the tool result that answers it.
    """
    if _NINE_CHAR_ID.fullmatch(foreign_id):
        return foreign_id
    number = int.from_bytes(hashlib.sha256(foreign_id.encode("utf-8")).digest(), "big")
    chars = []
    for _ in range(_ID_LENGTH):
        number, digit = divmod(number, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return "".join(chars)


def ascii_lower(text: str) -> str:
    """`text` with only A-Z lowered: case-insensitive marker matching that never changes a string's length."""
    return "".join(chr(ord(char) + 32) if "A" <= char <= "Z" else char for char in text)


def partial_marker_length(text: str, marker: str, *, ignore_case: bool = False) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker` (text to hold back).

    With `ignore_case`, `marker` must be lowercase and A-Z in `text` match it case-insensitively.
    """
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        tail = text[-length:]
        if (ascii_lower(tail) if ignore_case else tail) == marker[:length]:
            return length
    return 0


class JsonValueScanner:
    """Finds where one JSON object or array ends, fed piece by piece (balanced brackets, strings and escapes).

    The first character fed must be `{` or `[`. It does not validate: `json.loads` does that once the value ends.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> int | None:
        """The index in `text` just past the value's end, or None if the value goes on past `text`."""
        for index, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth <= 0:
                    return index + 1
        return None


class StateMachineParser:
    """The loop both formats' parsers share: `feed` appends text, then steps run while they change the state (each
    step consumes what it can decide on now); `finish` runs them once more knowing no text will follow."""

    def __init__(self, state: str) -> None:
        self._state = state
        self._pending = ""

    def feed(self, text: str) -> list[ParsedEvent]:
        self._pending += text
        return self._run(final=False)

    def finish(self) -> list[ParsedEvent]:
        return self._run(final=True)

    def _run(self, *, final: bool) -> list[ParsedEvent]:
        events: list[ParsedEvent] = []
        while True:
            state = self._state
            self._step(state, events, final)
            if self._state == state:
                return events

    def _step(self, state: str, events: list[ParsedEvent], final: bool) -> None:
        raise NotImplementedError

