"""The KV cache's bookkeeping: which sequence slot is free, and which tokens each free slot still holds, so a new
prompt can start from the longest prefix any slot has computed.

KV computed under one key is never reused under another. The key is what changes the numbers besides the tokens:
the LoRA adapters and their scales (a prefix computed on the base is not the adapter's), and the cache salt (one
tenant must not learn from timings which prefixes another sent). Image positions hold placeholders derived from the
image's pixels (see `EnginePrompt`), so tokens equal means images equal too. The llama.cpp calls stay in the engine;
this module only decides.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from faisca.engine.base import LoraSet


@dataclass(frozen=True)
class CacheKey:
    salt: str | None = None
    loras: LoraSet = ()


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class PrefixCache:
    num_slots: int
    # free slot -> (key, tokens its KV holds)
    cached: dict[int, tuple[CacheKey, list[int]]] = field(default_factory=dict)
    free_order: deque[int] = field(default_factory=deque)  # least recently freed first

    def __post_init__(self) -> None:
        self.free_order.extend(range(self.num_slots))

    def longest_prefix(self, key: CacheKey, tokens: Sequence[int],
                       running: Iterable[tuple[int, CacheKey, Sequence[int]]]) -> tuple[int, int]:
        """(slot, length) of the longest prefix of `tokens` that a free slot or a running sequence (slot, key, its
        computed tokens) of the same key holds; (-1, 0) when none does."""
        holders = [(slot, held) for slot, (held_key, held) in self.cached.items() if held_key == key]
        holders += [(slot, held) for slot, held_key, held in running if held_key == key]
        best_slot, best_len = -1, 0
        for slot, held in holders:
            if (length := common_prefix_len(held, tokens)) > best_len:
                best_slot, best_len = slot, length
        return best_slot, best_len

    def take(self, slot: int) -> None:
        """A free slot (found holding a prefix) is taken."""
        self.free_order.remove(slot)
        self.cached.pop(slot, None)

    def take_least_recent(self) -> int:
        slot = self.free_order.popleft()
        self.cached.pop(slot, None)
        return slot

    def release(self, slot: int, key: CacheKey, tokens: list[int]) -> None:
        """A finished sequence's slot is free; its KV stays, as a prefix for later prompts of the same key."""
        self.cached[slot] = (key, tokens)
        self.free_order.append(slot)

    def release_empty(self, slot: int) -> None:
        """A preempted sequence's slot, its KV dropped: the first to be taken."""
        self.free_order.appendleft(slot)

    def drop_cached(self) -> list[int]:
        """Forget every cached prefix; the slots whose KV the engine must clear."""
        slots = list(self.cached)
        self.cached.clear()
        return slots
