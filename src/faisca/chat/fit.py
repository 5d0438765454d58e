"""Fitting a conversation into a context, as Ollama does: the oldest turns are left out until the prompt fits.

System messages always stay. A shorter conversation always starts at a user message (after the system ones), so
that no answer or tool result is left without the turn it answers, and templates that want turns to alternate
(Gemma's, Mistral's) still render it. The last user turn is never left out: if it does not fit on its own, the
request does not fit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from faisca.types import Message


def conversation_cuts(messages: Sequence[Message]) -> Iterator[tuple[int, ...]]:
    """The indices of the messages to keep, longest first: all of them, then without the oldest turn, and so on
    down to the system messages and the last user turn on."""
    yield tuple(range(len(messages)))
    systems = [index for index, message in enumerate(messages) if message.role == "system"]
    others = [index for index, message in enumerate(messages) if message.role != "system"]
    for position, index in enumerate(others):
        if position > 0 and messages[index].role == "user":
            yield tuple(sorted([*systems, *others[position:]]))
