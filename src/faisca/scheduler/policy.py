"""The scheduling policy: a pure function from (running, waiting, config) to one step's plan.

Each engine step is one ``llama_decode`` over a batch holding one token per decoding
sequence plus prompt chunks of sequences still prefilling. ``schedule`` decides it:

1. Admission: waiting sequences are admitted in FIFO order while
   ``len(running) + len(admitted) < max_num_seqs`` (each holds a KV sequence slot).
2. Decode first: every running sequence with ``num_pending_tokens == 1`` gets its one
   token, so decoding is never stalled by prefills. With more decoders than
   ``max_batch_tokens`` (tiny budgets), they are taken in the order given up to the budget.
   A just-admitted sequence whose pending is exactly 1 (one-token prompt, or a prompt
   almost fully cached) is a decoder too, served after the running decoders.
3. Prefill chunks: the remaining budget goes to sequences with ``num_pending_tokens > 1``,
   already-running ones first (in the order given), then just-admitted ones (FIFO), each
   getting ``min(pending, budget left)``. A long prompt is thus chunked across steps while
   decoders keep producing a token every step.
4. Sequences that get no tokens keep their place; nothing else changes. A plan never
   exceeds ``max_batch_tokens`` and never lists a request twice.

Admission depends only on free slots: a sequence may be admitted in a step whose budget
is already spent, and then gets its first tokens in a later step.

5. Groups: llama.cpp applies one set of LoRA adapters to a whole batch, so with ``group`` given only sequences of
   that group (``SequenceView.group``) get tokens this step; admission is unchanged. ``pick_group`` takes turns: the
   group served longest ago goes next, so sequences on different adapters all progress, and one group's sequences
   still batch together.

``choose_preemption_victim`` picks whom to evict when the KV cache is full: the most
recently admitted running sequence, never a lone one.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

_ALL = object()


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int  # sequences running at once (each holds a KV sequence slot)
    max_batch_tokens: int  # tokens in one llama_decode call

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_batch_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class SequenceView:
    """What the policy knows of a sequence."""

    request_id: int
    # Tokens the next batch can take: the uncomputed rest of its prompt while prefilling
    # (up to its next image, which is fed apart from the batch: 1 once it has reached one);
    # 1 (its last sampled token) while decoding. Always >= 1.
    num_pending_tokens: int
    group: Hashable = ()  # sequences batch together only within a group (their LoRA set)


@dataclass(frozen=True)
class StepPlan:
    admitted: tuple[int, ...] = ()  # waiting ids that start running now, in arrival order
    chunks: tuple[tuple[int, int], ...] = ()  # (request_id, num_tokens to feed now)

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.chunks)


def pick_group(candidates: Sequence[SequenceView], last_served: Mapping[Hashable, int]) -> Hashable:
    """The group whose turn it is among `candidates` (in order): the one served longest ago (never: first)."""
    order = list(dict.fromkeys(view.group for view in candidates))
    return min(order, key=lambda group: last_served.get(group, -1)) if order else ()


def schedule(
    running: Sequence[SequenceView], waiting: Sequence[SequenceView], config: SchedulerConfig,
    *, group: Hashable = _ALL,
) -> StepPlan:
    for seq in (*running, *waiting):
        if seq.num_pending_tokens < 1:
            raise ValueError(f"request {seq.request_id}: num_pending_tokens must be >= 1")
    free_slots = max(0, config.max_num_seqs - len(running))
    admitted = list(waiting[:free_slots])
    order = (
        [s for s in running if s.num_pending_tokens == 1]
        + [s for s in admitted if s.num_pending_tokens == 1]
        + [s for s in running if s.num_pending_tokens > 1]
        + [s for s in admitted if s.num_pending_tokens > 1]
    )
    if group is not _ALL:
        order = [s for s in order if s.group == group]
    budget = config.max_batch_tokens
    chunks: list[tuple[int, int]] = []
    for seq in order:
        if budget == 0:
            break
        n = min(seq.num_pending_tokens, budget)
        chunks.append((seq.request_id, n))
        budget -= n
    return StepPlan(tuple(s.request_id for s in admitted), tuple(chunks))


def choose_preemption_victim(running: Sequence[SequenceView]) -> int | None:
    """The most recently admitted (last) running sequence; None when fewer than 2 run."""
    return running[-1].request_id if len(running) >= 2 else None
