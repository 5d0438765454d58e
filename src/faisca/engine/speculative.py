"""Speculative decoding by prompt lookup (n-gram): proposing draft tokens, verifying them, backing off.

A decoding sequence's next tokens are often a copy of something it already holds (an edit that repeats most of its
prompt, code that quotes a definition, a list that echoes its question). `propose_ngram` finds the last few tokens
earlier in the sequence and proposes what followed them there. The engine then feeds the sequence's last sampled
token and the k drafts in one batch, with logits on every row, and `verify` walks the rows: the token the target
samples at row i is kept (it comes from the target, whatever the draft said); while it equals draft i, row i + 1's
logits are valid too (they were computed after exactly the tokens the sequence now holds), so the walk goes on; the
first mismatch ends it. Each row is sampled exactly as a single-token step would be (same logits, since a token's
logits do not depend on its batch: `batch_invariance.py`; same sampler state, same random draw), so the text is the
same token for token as without speculation, at any temperature and seed; only the speed changes. (For a
deterministic proposal, keeping draft i iff the target samples it is the standard rejection rule.)

`Backoff` keeps one sequence from paying for drafts that are not accepted: the next draft is one token longer than
the run the last one had accepted (twice as long after a fully accepted one), and after a draft with nothing
accepted the sequence proposes nothing for 1, 2, 4, ... up to 16 steps; an accepted draft resets that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

MAX_BACKOFF_STEPS = 16
MAX_DRAFT_LENGTH = 64


@dataclass(frozen=True)
class SpeculationConfig:
    method: Literal["ngram", "draft"] = "ngram"  # prompt lookup, or a draft model (`engine/draft.py`)
    max_draft_tokens: int = 4  # drafts verified per step at most (--draft-max); a request may ask for fewer
    # speculate only while at most this many sequences decode: beyond, the batch already keeps the cores busy
    max_sequences: int = 2
    min_ngram: int = 2  # a single token recurring says little about what follows it (bench/speculative.py)
    max_ngram: int = 3

    def __post_init__(self) -> None:
        if self.max_draft_tokens < 1 or self.max_sequences < 1 or not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"invalid speculation settings: {self}")


def propose_ngram(tokens: Sequence[int], *, max_tokens: int, min_ngram: int = 1, max_ngram: int = 3) -> list[int]:
    """Up to `max_tokens` tokens that followed the most recent earlier occurrence of the last n tokens of `tokens`
    (n from `max_ngram` down to `min_ngram`, the longest that occurs); [] when none occurs. Negative ids (image
    placeholders) are never proposed nor matched."""
    length = len(tokens)
    if max_tokens <= 0 or length < 2:
        return []
    values = np.asarray(tokens, dtype=np.int64)
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        pattern = values[length - n:]
        if (pattern < 0).any():
            continue
        # starts i of earlier occurrences, whose continuation (from i + n) holds at least one token
        candidates = np.flatnonzero(values[: length - n] == pattern[0])
        for offset in range(1, n):
            candidates = candidates[values[candidates + offset] == pattern[offset]]
        if candidates.size == 0:
            continue
        start = int(candidates[-1]) + n
        draft = values[start: start + max_tokens]
        negative = np.flatnonzero(draft < 0)
        if negative.size:
            draft = draft[: negative[0]]
        if draft.size:
            return [int(token) for token in draft]
    return []


def verify(drafts: Sequence[int], sample_row: Callable[[int], int | None]) -> int:
    """Walk the verified rows: `sample_row(i)` samples and accepts the target's token at row i (row 0: after the last
    sampled token; row i: after draft i - 1), returning it, or None once the sequence has ended. Stops at the first
    token that differs from its draft, at the end of the sequence, or after the row past the last draft. Returns how
    many drafts were accepted."""
    for row in range(len(drafts) + 1):
        token = sample_row(row)
        if token is None or row == len(drafts) or token != drafts[row]:
            return row
    raise AssertionError("unreachable")


class Backoff:
    """One sequence's willingness to speculate: how many drafts it verifies next (after a partly accepted draft, one
    more than were accepted; doubling while every draft is accepted), and steps without any after a draft with
    nothing accepted (1, 2, 4, ... up to 16)."""

    def __init__(self) -> None:
        self._num_skips_left = 0
        self._penalty = 0
        self._max_tokens = MAX_DRAFT_LENGTH

    def max_tokens(self, limit: int) -> int:
        """How many drafts to propose now, at most `limit`."""
        return min(limit, self._max_tokens)

    def wants_draft(self) -> bool:
        """Whether to propose now (called once a step the sequence could speculate in)."""
        if self._num_skips_left > 0:
            self._num_skips_left -= 1
            return False
        return True

    def record(self, num_drafted: int, num_accepted: int) -> None:
        if num_drafted == 0:
            return
        if num_accepted == 0:
            self._penalty = min(max(1, 2 * self._penalty), MAX_BACKOFF_STEPS)
            self._num_skips_left = self._penalty
            self._max_tokens = 1
        elif num_accepted < num_drafted:
            self._penalty = 0
            self._max_tokens = num_accepted + 1
        else:
            self._penalty = 0
            self._max_tokens = min(2 * num_drafted, MAX_DRAFT_LENGTH)
