"""Admission control on the asyncio side: how many requests a model takes in at once, running plus waiting.

Beyond `max_running + max_waiting` a request is turned away at once (503 with Retry-After) rather than
queued without bound; the engine's scheduler decides which of the admitted ones run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from faisca.errors import Overloaded

T = TypeVar("T")


@dataclass(frozen=True)
class AdmissionLimits:
    max_running: int = 8
    max_waiting: int = 64
    retry_after_s: int = 1


class Admission:
    def __init__(self, name: str, limits: AdmissionLimits) -> None:
        self._name = name
        self._limits = limits
        self.num_in_flight = 0

    def enter(self) -> Ticket:
        limits = self._limits
        if self.num_in_flight >= limits.max_running + limits.max_waiting:
            raise Overloaded(
                f"`{self._name}` is busy: {limits.max_running} requests running and {limits.max_waiting} waiting. "
                "Retry shortly.",
                retry_after_s=limits.retry_after_s,
            )
        self.num_in_flight += 1
        return Ticket(self)


class Ticket:
    """One admitted request; released exactly once, releasing what was tied to it (its model's lease)."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission
        self._tied: list[Callable[[], None]] = []

    def tie(self, release: Callable[[], None]) -> None:
        """Call `release` when the ticket is released."""
        self._tied.append(release)

    def release(self) -> None:
        if self._admission is not None:
            self._admission.num_in_flight -= 1
            self._admission = None
            for release in self._tied:
                release()
            self._tied.clear()


class AdmittedStream(AsyncIterator[T]):
    """An event stream holding its request's ticket until it ends, fails, is closed, or is dropped unread."""

    def __init__(self, events: AsyncIterator[T], ticket: Ticket) -> None:
        self._events = events
        self._ticket = ticket

    def __aiter__(self) -> AdmittedStream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await anext(self._events)
        except BaseException:  # the end (StopAsyncIteration), an error, or a cancellation
            self._ticket.release()
            raise

    async def aclose(self) -> None:
        self._ticket.release()
        await self._events.aclose()  # type: ignore[attr-defined]

    def __del__(self) -> None:
        self._ticket.release()
