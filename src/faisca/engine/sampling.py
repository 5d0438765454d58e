"""Picking the next token of one sequence from its logits row, in numpy.

`TokenSampler` (one per sequence) reads the row llama.cpp wrote and never writes into it. In order, as
llama.cpp and vLLM do:

1. In this order, logit_bias: added to the listed tokens' logits (ids outside the vocabulary are ignored);
   repeat_penalty (1 = off; llama.cpp/vLLM semantics): every distinct token of the prompt or generated
   so far has its logit divided by the penalty if positive, multiplied by it otherwise;
   presence and frequency penalties (OpenAI semantics): a token generated `c` times so far loses
   `c * frequency_penalty + presence_penalty` (only generated tokens count, not the prompt's);
   bans (vLLM semantics): the model's end tokens with `ignore_eos`, and both they and `stop_token_ids`
   while fewer than `min_tokens` tokens have been generated, get -inf.
2. temperature 0: the argmax (greedy), nothing below applies.
3. top_k (0 = off): only the k highest logits stay candidates.
4. temperature scaling and softmax over the candidates.
5. min_p (0 = off): candidates with p < min_p * max p are dropped.
6. top_p (1 = off): the smallest set of most probable candidates whose mass reaches top_p stays
   (tokens tied with the last one kept stay too).
7. a draw from what is left, renormalised, with the sequence's own generator: the same seed gives the
   same draws for the same logits; no seed, fresh entropy.

The sampled token is recorded as generated, so the penalties see it at the next step.

Cost, over a vocabulary of n = 262,144 (Gemma 3): plain greedy is one `argmax` (tens of µs), with no
copy. Bias or penalties copy the row once (~30 µs) and touch only the listed tokens. Sampling without
top_k pays one `exp` over the row (the bulk of its cost) and a blocked cumulative sum (never a
full-length `cumsum`, several times slower than a sum); top_k pays one `argpartition` over the row and
then works on k values. top_p screens the tokens within a floor of the most probable one (one compare)
and sorts only those; only a flat distribution, where a quarter of the vocabulary or more is in play,
sorts all the values (not their indices) — a few ms, the slowest case. Measured on a 2-core EPYC VM:
greedy ~25-50 µs; temperature alone ~0.5 ms; top_k 40 ~0.45 ms; top_p 0.95 ~0.65 ms on a peaked row,
~1.3 ms on N(0, 3²) logits, ~3.7 ms on flat N(0, 1) ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from faisca.types import SamplingParams

_BLOCK = 1024  # block length of the two-level cumulative sum
_FLOOR = 1e-3  # first screen of top_p: weights within ~6.9 nats of the most probable token
_TINY_TEMPERATURE = float(np.finfo(np.float32).tiny)


class TokenSampler:
    """Samples one sequence's tokens; keeps its generator and what the penalties need."""

    def __init__(self, params: SamplingParams, *, prompt_tokens: Sequence[int], end_tokens: Sequence[int] = ()) -> None:
        """`end_tokens`: the model's end-of-generation tokens, banned by `ignore_eos` and `min_tokens`."""
        self.params = params
        self._num_generated = 0
        self._banned_always = np.array(end_tokens if params.ignore_eos else (), dtype=np.intp)
        self._banned_early = np.array(sorted({*end_tokens, *params.stop_token_ids}), dtype=np.intp)
        # SeedSequence wants a non-negative seed; a negative one is mapped into range, still deterministic.
        self._rng = np.random.default_rng(None if params.seed is None else params.seed % (1 << 64))

        bias: dict[int, float] = {}
        for token, value in params.logit_bias:
            if token >= 0:
                bias[token] = bias.get(token, 0.0) + value
        self._bias_ids = np.fromiter(bias.keys(), dtype=np.intp, count=len(bias))
        self._bias_values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))

        # Generated tokens, for presence/frequency: distinct ids and their counts, in first-seen order.
        self._uses_counts = params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
        self._slot_of: dict[int, int] = {}
        self._generated_ids = np.empty(0, dtype=np.intp)
        self._generated_counts = np.empty(0, dtype=np.float32)

        # Prompt and generated tokens, for repeat_penalty (only tracked when it is on).
        self._uses_repeat = params.repeat_penalty != 1.0
        self._seen: set[int] = {t for t in prompt_tokens if t >= 0} if self._uses_repeat else set()
        self._seen_ids = np.fromiter(self._seen, dtype=np.intp, count=len(self._seen))

    def sample(self, logits: np.ndarray) -> int:
        """The next token, drawn from `logits` (shape (n_vocab,), left untouched); recorded as generated."""
        token = self._pick(logits)
        self._record(token)
        return token

    def _pick(self, logits: np.ndarray) -> int:
        p = self.params
        z = self._adjusted(logits)
        if p.temperature <= 0.0:
            return int(np.argmax(z))
        owned = z is not logits  # a scratch array of ours, that may be overwritten

        n = z.shape[0]
        ids: np.ndarray | None = None  # candidate token ids; None: the whole vocabulary, in order
        if 0 < p.top_k < n:
            ids = np.argpartition(z, n - p.top_k)[n - p.top_k :]
            z, owned = z[ids], True

        # Unnormalised probabilities: exp((z - max) / T), so the most probable candidate has weight 1.
        w = np.subtract(z, z.max(), out=z if owned else None, dtype=np.float32)
        if p.temperature != 1.0:
            with np.errstate(over="ignore"):  # a tiny temperature sends all but the max to -inf
                np.divide(w, max(p.temperature, _TINY_TEMPERATURE), out=w)
        np.exp(w, out=w)

        if p.min_p > 0.0:
            keep = np.flatnonzero(w >= min(p.min_p, 1.0))  # the most probable candidate always stays
            ids, w = (keep if ids is None else ids[keep]), w[keep]
        if p.top_p < 1.0 and (keep := _nucleus(w, p.top_p)) is not None:
            ids, w = (keep if ids is None else ids[keep]), w[keep]

        i = _draw(w, self._rng.random())
        return int(i if ids is None else ids[i])

    def _adjusted(self, logits: np.ndarray) -> np.ndarray:
        """`logits` itself when nothing applies, else a copy with bias, penalties and bans applied."""
        p = self.params
        bias = self._bias_ids.size > 0
        repeat = self._uses_repeat and self._seen_ids.size > 0
        counts = self._uses_counts and self._generated_ids.size > 0
        banned = self._banned_early if self._num_generated < p.min_tokens else self._banned_always
        if not (bias or repeat or counts or banned.size):
            return logits
        z = np.array(logits, dtype=np.float32)  # one copy of the row
        if bias:
            valid = self._bias_ids < z.shape[0]
            z[self._bias_ids[valid]] += self._bias_values[valid]
        if repeat:
            v = z[self._seen_ids]
            z[self._seen_ids] = np.where(v > 0, v / p.repeat_penalty, v * p.repeat_penalty)
        if counts:
            z[self._generated_ids] -= self._generated_counts * p.frequency_penalty + p.presence_penalty
        if banned.size:
            z[banned[banned < z.shape[0]]] = -np.inf
        return z

    def _record(self, token: int) -> None:
        self._num_generated += 1
        slot = self._slot_of.get(token)
        if slot is None:
            self._slot_of[token] = self._generated_ids.size
            self._generated_ids = np.append(self._generated_ids, token)
            self._generated_counts = np.append(self._generated_counts, np.float32(1.0))
        else:
            self._generated_counts[slot] += 1.0
        if self._uses_repeat and token not in self._seen:
            self._seen.add(token)
            self._seen_ids = np.append(self._seen_ids, token)


def _nucleus(w: np.ndarray, top_p: float) -> np.ndarray | None:
    """Keep the smallest set of largest weights whose sum reaches `top_p` of the total (and the weights tied
    with the last one kept). Returns their indices; or, when most of `w` stays (a flat distribution), None,
    having zeroed the others in place."""
    n = w.shape[0]
    total = float(w.sum(dtype=np.float64))
    target = top_p * total
    # The weights below a floor sum to at most n * floor: at floor (total - target) / n, the weights at or
    # above it surely reach the target, so they hold the nucleus. A higher floor first: real distributions
    # are peaked, and it leaves far fewer candidates. (No argpartition: it crawls on the many equal weights,
    # zeros once exp underflows, of a low temperature.)
    sure = (total - target) / n
    for floor in (_FLOOR, sure) if sure < _FLOOR else (sure,):
        screen = w >= floor
        if np.count_nonzero(screen) > n // 4:
            break
        candidates = np.flatnonzero(screen)
        weights = w[candidates]
        held = float(weights.sum(dtype=np.float64))
        if held >= target:
            ordered = np.sort(weights)[::-1]
            return candidates[weights >= ordered[_reach(ordered, target / held, "left")]]
    ordered = np.sort(w)[::-1]  # the values, not their indices: several times cheaper
    np.multiply(w, w >= ordered[_reach(ordered, top_p, "left")], out=w)
    return None


def _draw(w: np.ndarray, u: float) -> int:
    """Index drawn with probability proportional to the non-negative weights `w`, from u uniform in [0, 1)."""
    i = _reach(w, u, "right")
    if w[i] <= 0.0:  # only when rounding put u * total at the very end: take the last token with weight
        i = int(np.flatnonzero(w)[-1])
    return i


def _reach(w: np.ndarray, fraction: float, side: Literal["left", "right"]) -> int:
    """First index where the running sum of `w` reaches ("left": ≥) or passes ("right": >) `fraction` of the
    total (clamped to the last index). In two levels, block sums then one block's running sum: a full-length
    `cumsum` is several times slower than a sum."""
    n = w.shape[0]
    if n <= 4 * _BLOCK:
        cumulative = np.cumsum(w, dtype=np.float64)
        return min(int(np.searchsorted(cumulative, fraction * cumulative[-1], side=side)), n - 1)
    num_full = n // _BLOCK
    sums = w[: num_full * _BLOCK].reshape(num_full, _BLOCK).sum(axis=1)
    if n > num_full * _BLOCK:
        sums = np.append(sums, w[num_full * _BLOCK :].sum())
    block_ends = np.cumsum(sums, dtype=np.float64)
    target = fraction * block_ends[-1]
    b = min(int(np.searchsorted(block_ends, target, side=side)), block_ends.size - 1)
    # Within the block, as a fraction of its own sum: immune to the two sums rounding differently.
    within = (target - (block_ends[b - 1] if b > 0 else 0.0)) / float(sums[b]) if sums[b] > 0 else 1.0
    cumulative = np.cumsum(w[b * _BLOCK : (b + 1) * _BLOCK], dtype=np.float64)
    i = min(int(np.searchsorted(cumulative, within * cumulative[-1], side=side)), cumulative.size - 1)
    return b * _BLOCK + i
