"""Fitting a conversation into a context, as Ollama does: the oldest turns are left out until the prompt fits.

System messages always stay. A shorter conversation always starts at a user message (after the system ones), so
that no answer or tool result is left without the turn it answers, and templates that want turns to alternate
(Gemma's, Mistral's) still render it. The last user turn is never left out: if it does not fit on its own, the
request does not fit.

Trying each cut in turn re-renders the conversation once per cut (quadratic: 20,000 short messages took minutes);
`longest_fitting` tries the whole conversation, then gallops from the shortest cut towards longer ones and bisects,
so the work is one render of the whole plus a logarithmic number of renders about the size of what is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import overload

from faisca.types import Message


class ConversationCuts(Sequence[tuple[int, ...]]):
    """The indices of the messages to keep, longest first: all of them, then without the oldest turn, and so on
    down to the system messages and the last user turn on. Each cut is built when asked for."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self._systems = [index for index, message in enumerate(messages) if message.role == "system"]
        self._others = [index for index, message in enumerate(messages) if message.role != "system"]
        # where each cut's kept turns start, in `_others`
        self._starts = [0] + [position for position, index in enumerate(self._others)
                              if position > 0 and messages[index].role == "user"]

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, cut: int) -> tuple[int, ...]: ...
    @overload
    def __getitem__(self, cut: slice) -> Sequence[tuple[int, ...]]: ...
    def __getitem__(self, cut: int | slice) -> tuple[int, ...] | Sequence[tuple[int, ...]]:
        if isinstance(cut, slice):
            return [self[index] for index in range(*cut.indices(len(self)))]
        kept = self._others[self._starts[cut]:]
        if not self._systems:
            return tuple(kept)
        return tuple(sorted([*self._systems, *kept]))


def conversation_cuts(messages: Sequence[Message]) -> ConversationCuts:
    return ConversationCuts(messages)


def longest_fitting(num_cuts: int, fits: Callable[[int], bool]) -> int:
    """The first (longest) of `num_cuts` cuts for which `fits(cut)` holds, given that shorter cuts fit whenever a
    longer one does; the last (shortest) one when none fits. Asks `fits` about O(log n) cuts, mostly short ones:
    the whole conversation first (the common case: it fits), then the shortest, then 2, 4, 8… cuts longer, then
    bisects the last step."""
    if fits(0) or num_cuts == 1:
        return 0
    shortest = num_cuts - 1
    if not fits(shortest):
        return shortest
    too_long, fitting = 0, shortest  # fits(too_long) is False, fits(fitting) True
    step = 1
    while fitting - step > too_long:
        if fits(fitting - step):
            fitting -= step
            step *= 2
        else:
            too_long = fitting - step
            break
    while fitting - too_long > 1:
        middle = (too_long + fitting) // 2
        if fits(middle):
            fitting = middle
        else:
            too_long = middle
    return fitting
