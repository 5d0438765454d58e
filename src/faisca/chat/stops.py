"""Stop strings over streamed text: emit what is safe as soon as it is safe, hold back what might start a stop.

Which stop matches is a function of the whole text, never of how it was chunked: the occurrence that *ends*
first wins (as it would if the text arrived one character at a time), and among occurrences ending at the same
place the longest, i.e. the one starting first. The text emitted is everything before that occurrence.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed generated text in; get back the text safe to emit and, once one matches, the stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        # Longest first, so that of the stops ending at one place the longest is found first.
        unique = {stop for stop in stops if stop}
        self._stops: tuple[str, ...] = tuple(sorted(unique, key=lambda stop: (-len(stop), stop)))
        self._held = ""
        self._matched: str | None = None

    @property
    def matched(self) -> str | None:
        """The stop string that matched, or None while none has."""
        return self._matched

    def feed(self, text: str) -> tuple[str, str | None]:
        """Take the next piece of text; return (text to emit now, the stop that matched or None).

        Once a stop has matched the matcher is done: later calls return ("", that stop).
        """
        if self._matched is not None:
            return "", self._matched
        if not self._stops:
            return text, None
        buffer = self._held + text
        match = self._first_match(buffer)
        if match is not None:
            start, stop = match
            self._held = ""
            self._matched = stop
            return buffer[:start], stop
        keep_from = self._partial_start(buffer)
        self._held = buffer[keep_from:]
        return buffer[:keep_from], None

    def flush(self) -> str:
        """The text still held back, at the end of generation (it never contains a whole stop)."""
        held, self._held = self._held, ""
        return held

    def _first_match(self, buffer: str) -> tuple[int, str] | None:
        """(start, stop) of the occurrence ending first, ties to the longest; None if no stop occurs."""
        best: tuple[int, int, str] | None = None  # (end, start, stop)
        for stop in self._stops:
            start = buffer.find(stop)
            if start < 0:
                continue
            end = start + len(stop)
            if best is None or end < best[0]:
                best = (end, start, stop)
        return None if best is None else (best[1], best[2])

    def _partial_start(self, buffer: str) -> int:
        """Where the longest tail of `buffer` that is a proper prefix of some stop begins (len if none)."""
        longest = max(len(stop) for stop in self._stops)
        for start in range(max(0, len(buffer) - longest + 1), len(buffer)):
            tail = buffer[start:]
            if any(stop.startswith(tail) for stop in self._stops):
                return start
        return len(buffer)
