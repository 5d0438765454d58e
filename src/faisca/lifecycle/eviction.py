"""Making room for a model about to load: which idle models leave, least recently used first.

A model with requests in flight never leaves, nor does a pinned one (named at start with `--model`). When the
models that may leave cannot make room, the load waits for requests to end (`busy`: a 503 with Retry-After); when
the model could not fit even beside the pinned models alone, it never will (`never`: a 400).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Resident:
    """A model in memory (or being loaded), as the policy sees it."""

    model_id: str
    num_bytes: int
    num_in_flight: int
    last_used_s: float  # monotonic
    is_pinned: bool = False

    @property
    def can_leave(self) -> bool:
        return self.num_in_flight == 0 and not self.is_pinned


@dataclass(frozen=True)
class Room:
    verdict: Literal["fits", "busy", "never"]
    evict: tuple[str, ...] = ()  # with `fits`: the models to unload first, in order
    reason: str = ""  # with `busy` or `never`: why, for the error message


def plan_room(residents: Sequence[Resident], num_bytes: int, *, budget_bytes: int | None,
              max_loaded_models: int | None) -> Room:
    """Where a model of `num_bytes` fits among `residents` within the byte budget and the model count (None: no
    such limit)."""
    pinned = [resident for resident in residents if resident.is_pinned]
    pinned_bytes = sum(resident.num_bytes for resident in pinned)
    if budget_bytes is not None and num_bytes + pinned_bytes > budget_bytes:
        beside = f" beside the pinned models ({pinned_bytes / 2**20:.0f} MiB)" if pinned else ""
        return Room("never", reason=f"it needs {num_bytes / 2**20:.0f} MiB, and the memory budget is "
                                    f"{budget_bytes / 2**20:.0f} MiB{beside}")
    if max_loaded_models is not None and len(pinned) >= max_loaded_models:
        return Room("never", reason=f"--max-loaded-models {max_loaded_models} are loaded and pinned")
    used_bytes = sum(resident.num_bytes for resident in residents)
    count = len(residents)
    evict: list[str] = []
    for resident in sorted((r for r in residents if r.can_leave), key=lambda r: r.last_used_s):
        if _fits(used_bytes, count, num_bytes, budget_bytes, max_loaded_models):
            break
        evict.append(resident.model_id)
        used_bytes -= resident.num_bytes
        count -= 1
    if _fits(used_bytes, count, num_bytes, budget_bytes, max_loaded_models):
        return Room("fits", tuple(evict))
    busy = ", ".join(r.model_id for r in residents if r.num_in_flight)
    return Room("busy", reason=f"the models in memory are in use ({busy or 'loading'}) and it does not fit beside them")


def _fits(used_bytes: int, count: int, num_bytes: int, budget_bytes: int | None, max_loaded_models: int | None) -> bool:
    return ((budget_bytes is None or used_bytes + num_bytes <= budget_bytes)
            and (max_loaded_models is None or count + 1 <= max_loaded_models))
