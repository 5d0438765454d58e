"""TokenSampler: greedy, seeding, top_k/top_p/min_p, logit_bias, penalties, and the distribution it draws."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from faisca.engine.sampling import TokenSampler
from faisca.types import SamplingParams

N_GEMMA = 262_144


def frozen(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """A float32 row that cannot be written, as llama.cpp's buffer must not be."""
    row = np.array(values, dtype=np.float32)
    row.flags.writeable = False
    return row


def random_row(n: int, seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return frozen(np.random.default_rng(seed).standard_normal(n).astype(np.float32) * scale)


def sampler(prompt: Sequence[int] = (), **params: object) -> TokenSampler:
    return TokenSampler(SamplingParams(**params), prompt_tokens=prompt)  # type: ignore[arg-type]


def draws(row: np.ndarray, n: int, **params: object) -> list[int]:
    s = sampler(**params)
    return [s.sample(row) for _ in range(n)]


@pytest.mark.parametrize("n", [5, 1000, N_GEMMA])
def test_greedy_is_argmax_and_leaves_the_row_alone(n: int) -> None:
    row = random_row(n)
    before = row.copy()
    s = sampler(temperature=0.0)
    assert [s.sample(row) for _ in range(3)] == [int(np.argmax(row))] * 3
    np.testing.assert_array_equal(row, before)


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 1.0},
        {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05},
        {"temperature": 0.0, "logit_bias": ((1, 5.0),), "repeat_penalty": 1.3, "frequency_penalty": 0.5},
        {"temperature": 0.8, "top_p": 0.95, "presence_penalty": 1.0, "repeat_penalty": 1.1},
    ],
)
def test_never_writes_the_row(params: dict[str, object]) -> None:
    row = random_row(N_GEMMA)  # read-only: any write raises
    before = row.copy()
    s = sampler(prompt=[1, 2, 3], seed=1, **params)
    for _ in range(5):
        assert 0 <= s.sample(row) < N_GEMMA
    np.testing.assert_array_equal(row, before)


def test_same_seed_same_draws_different_seeds_differ() -> None:
    row = random_row(1000, scale=1.0)
    first = draws(row, 50, temperature=1.0, seed=42)
    assert draws(row, 50, temperature=1.0, seed=42) == first
    assert draws(row, 50, temperature=1.0, seed=43) != first
    assert draws(row, 50, temperature=1.0, seed=-7) == draws(row, 50, temperature=1.0, seed=-7)


@pytest.mark.parametrize("temperature", [0.1, 1.0, 5.0])
def test_top_k_1_top_p_tiny_min_p_1_are_greedy(temperature: float) -> None:
    for n in (10, N_GEMMA):
        row = random_row(n, seed=3, scale=1.0)
        best = int(np.argmax(row))
        for cut in ({"top_k": 1}, {"top_p": 1e-9}, {"top_p": 0.0}, {"min_p": 1.0}):
            assert set(draws(row, 20, temperature=temperature, seed=0, **cut)) == {best}, cut


def test_logit_bias_bans_and_forces() -> None:
    row = random_row(500, seed=5, scale=1.0)
    best = int(np.argmax(row))
    assert sampler(temperature=0.0, logit_bias=((best, -100.0),)).sample(row) != best
    assert best not in draws(row, 200, temperature=1.0, seed=0, logit_bias=((best, -100.0),))
    low = int(np.argmin(row))
    assert sampler(temperature=0.0, logit_bias=((low, 100.0),)).sample(row) == low
    assert set(draws(row, 50, temperature=1.0, seed=0, logit_bias=((low, 100.0),))) == {low}
    # ids outside the vocabulary are ignored
    assert sampler(temperature=0.0, logit_bias=((10_000, 100.0), (-1, 5.0))).sample(row) == best


@pytest.mark.parametrize("penalty", [{"frequency_penalty": 2.0}, {"presence_penalty": 2.0}])
def test_presence_and_frequency_penalise_generated_tokens(penalty: dict[str, float]) -> None:
    row = frozen([1.0, 0.9])
    s = sampler(temperature=0.0, **penalty)
    assert s.sample(row) == 0
    assert s.sample(row) == 1  # 0 now pays the penalty
    # A prompt token is not penalised: only generated ones count.
    assert sampler(prompt=[0, 0, 0], temperature=0.0, **penalty).sample(row) == 0


def test_frequency_grows_with_count_presence_does_not() -> None:
    row = frozen([3.0, 1.0, 0.0])
    freq = sampler(temperature=0.0, frequency_penalty=0.8)
    # 0 is picked while 3 - 0.8c > 1: c = 0, 1, 2; then 1 (3 - 2.4 = 0.6 < 1), ...
    assert [freq.sample(row) for _ in range(4)] == [0, 0, 0, 1]
    pres = sampler(temperature=0.0, presence_penalty=1.5)
    assert [pres.sample(row) for _ in range(4)] == [0, 0, 0, 0]  # 3 - 1.5 > 1, however often


def test_repeat_penalty_divides_positive_multiplies_negative_and_sees_the_prompt() -> None:
    # Positive: 2.0 / 2 = 1.0 < 1.5, so the prompt's token 0 loses to 1.
    assert sampler(prompt=[0], temperature=0.0, repeat_penalty=2.0).sample(frozen([2.0, 1.5])) == 1
    # Negative: -1.0 * 2 = -2.0 < -1.5, so token 0 loses to 1.
    assert sampler(prompt=[0, 0], temperature=0.0, repeat_penalty=2.0).sample(frozen([-1.0, -1.5])) == 1
    # Once per distinct token: many repetitions of 0 do not push it further (1.2 / 2 = 0.6 > 0.5).
    assert sampler(prompt=[0] * 10, temperature=0.0, repeat_penalty=2.0).sample(frozen([1.2, 0.5])) == 0
    # Generated tokens count too.
    s = sampler(temperature=0.0, repeat_penalty=2.0)
    assert [s.sample(frozen([2.0, 1.5, 0.0])) for _ in range(3)] == [0, 1, 0]


def test_draws_follow_the_distribution() -> None:
    row = frozen(np.log([0.5, 0.3, 0.2]))
    counts = Counter(draws(row, 20_000, temperature=1.0, seed=11))
    for token, p in enumerate([0.5, 0.3, 0.2]):
        assert abs(counts[token] / 20_000 - p) < 0.02


def test_temperature_sharpens_and_flattens() -> None:
    row = frozen(np.log([0.5, 0.3, 0.2]))
    # T = 0.5 squares the probabilities: 0.25, 0.09, 0.04 → 0.658, 0.237, 0.105
    counts = Counter(draws(row, 20_000, temperature=0.5, seed=12))
    for token, p in enumerate([0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38]):
        assert abs(counts[token] / 20_000 - p) < 0.02


def test_top_p_keeps_the_nucleus_renormalised() -> None:
    row = frozen(np.log([0.5, 0.3, 0.2]))
    counts = Counter(draws(row, 20_000, temperature=1.0, seed=13, top_p=0.75))
    assert set(counts) == {0, 1}
    assert abs(counts[0] / 20_000 - 0.5 / 0.8) < 0.02


def test_top_k_keeps_the_k_best() -> None:
    row = frozen(np.log([0.5, 0.3, 0.2]))
    counts = Counter(draws(row, 20_000, temperature=1.0, seed=14, top_k=2))
    assert set(counts) == {0, 1}
    assert abs(counts[0] / 20_000 - 0.5 / 0.8) < 0.02


def test_min_p_drops_the_unlikely() -> None:
    row = frozen(np.log([0.5, 0.3, 0.2]))
    # 0.2 < 0.5 * 0.5: dropped; 0.3 stays.
    counts = Counter(draws(row, 20_000, temperature=1.0, seed=15, min_p=0.5))
    assert set(counts) == {0, 1}
    assert abs(counts[0] / 20_000 - 0.5 / 0.8) < 0.02


def test_large_vocabulary_draws_follow_the_distribution() -> None:
    """The two-level cumulative sum and the growing top_p window, on a Gemma-sized row."""
    probs = np.full(N_GEMMA, 0.5 / (N_GEMMA - 2))
    probs[[7, N_GEMMA - 3]] = [0.3, 0.2]  # the other 262,142 tokens share 0.5
    row = frozen(np.log(probs))
    counts = Counter(draws(row, 2_000, temperature=1.0, seed=16))
    assert abs(counts[7] / 2_000 - 0.3) < 0.04
    assert abs(counts[N_GEMMA - 3] / 2_000 - 0.2) < 0.04
    assert all(0 <= t < N_GEMMA for t in counts)
    nucleus = Counter(draws(row, 300, temperature=1.0, seed=17, top_p=0.45))
    assert set(nucleus) == {7, N_GEMMA - 3}
    assert abs(nucleus[7] / 300 - 0.6) < 0.1
    # A flat row: the nucleus is most of the vocabulary.
    flat = Counter(draws(random_row(N_GEMMA, seed=18, scale=0.5), 50, temperature=1.0, seed=18, top_p=0.9))
    assert len(flat) > 40


@pytest.mark.parametrize("n", [4_099, 10_007])
def test_draws_reach_the_partial_last_block(n: int) -> None:
    """A vocabulary that is not a whole number of blocks: the last, shorter one is drawn from too."""
    probs = np.full(n, 0.25 / (n - 2))
    probs[[0, n - 1]] = [0.25, 0.5]
    counts = Counter(draws(frozen(np.log(probs)), 4_000, temperature=1.0, seed=n))
    assert abs(counts[n - 1] / 4_000 - 0.5) < 0.03
    assert abs(counts[0] / 4_000 - 0.25) < 0.03


def test_low_temperature_with_top_p_on_a_large_row() -> None:
    """Most weights underflow to exactly 0: still the most probable tokens, and no crawl on the ties."""
    row = random_row(N_GEMMA, seed=21)
    best = int(np.argmax(row))
    assert set(draws(row, 20, temperature=0.01, top_p=0.9, seed=21)) == {best}
    top2 = set(np.argsort(row)[-2:].tolist())
    assert set(draws(row, 50, temperature=0.3, top_k=2, top_p=0.999, min_p=0.0, seed=22)) <= top2


def test_filters_combine_on_a_large_row() -> None:
    row = random_row(N_GEMMA, seed=23)
    top40 = set(np.argsort(row)[-40:].tolist())
    picked = draws(row, 100, temperature=0.8, top_k=40, top_p=0.9, min_p=0.01, seed=23)
    assert set(picked) <= top40


@pytest.mark.parametrize(("scale", "top_p"), [(0.3, 0.5), (4.0, 0.9), (8.0, 0.5)])
def test_top_p_draws_only_from_the_nucleus(scale: float, top_p: float) -> None:
    """Flat rows (all values sorted) and peaked ones (a screened few): the same nucleus as a full sort."""
    row = random_row(N_GEMMA, seed=19, scale=scale)
    order = np.argsort(row)[::-1]
    p = np.exp(row[order].astype(np.float64) - row[order[0]])
    nucleus = set(order[: int(np.searchsorted(np.cumsum(p), top_p * p.sum())) + 1].tolist())
    picked = draws(row, 100, temperature=1.0, seed=19, top_p=top_p)
    assert set(picked) <= nucleus
    if len(nucleus) <= 5:
        assert set(picked) == nucleus


def test_gemma_sized_row_with_temperature_and_top_p() -> None:
    row = random_row(N_GEMMA, seed=20)
    token = sampler(temperature=0.8, top_p=0.9, seed=20).sample(row)
    assert isinstance(token, int) and 0 <= token < N_GEMMA


def test_ignore_eos_bans_the_end_tokens_and_min_tokens_bans_them_and_stop_tokens_only_at_first() -> None:
    row = frozen([0.0, 9.0, 8.0, 7.0, 1.0])  # 1 is the end token, 2 a stop token id: the likeliest two
    plain = TokenSampler(SamplingParams(temperature=0), prompt_tokens=(), end_tokens=(1,))
    assert [plain.sample(row) for _ in range(2)] == [1, 1]
    ignoring = TokenSampler(SamplingParams(temperature=0, ignore_eos=True), prompt_tokens=(), end_tokens=(1,))
    assert [ignoring.sample(row) for _ in range(3)] == [2, 2, 2]
    early = TokenSampler(SamplingParams(temperature=0, min_tokens=2, stop_token_ids=(2,)), prompt_tokens=(), end_tokens=(1,))
    assert [early.sample(row) for _ in range(3)] == [3, 3, 1]
    drawn = TokenSampler(SamplingParams(temperature=1, seed=0, ignore_eos=True), prompt_tokens=(), end_tokens=(1,))
    assert 1 not in {drawn.sample(row) for _ in range(200)}
    assert row[1] == 9.0  # the row itself is never written
