from __future__ import annotations

import numpy as np

from faisca.engine.logprobs import log_normalizer, token_logprobs, top_tokens


def test_log_probabilities_are_a_log_softmax_that_does_not_overflow() -> None:
    logits = np.random.default_rng(3).normal(0, 4, 262_144).astype(np.float32)
    logits[7] = 80.0  # exp(80) overflows float32
    chosen, top = token_logprobs(logits, 7, 3)
    reference = logits.astype(np.float64) - (80.0 + np.log(np.exp(logits.astype(np.float64) - 80.0).sum()))
    assert abs(chosen - reference[7]) < 1e-6 and chosen <= 0.0
    assert [token for token, _ in top] == [7, *np.argsort(-reference)[1:3].tolist()]
    assert all(abs(value - reference[token]) < 1e-5 for token, value in top)
    assert abs(np.exp(logits.astype(np.float64) - log_normalizer(logits)).sum() - 1.0) < 1e-6


def test_top_tokens_are_likeliest_first_ties_by_id_and_bounded_by_the_vocabulary() -> None:
    logits = np.array([1.0, 3.0, 3.0, -2.0, 2.0], dtype=np.float32)
    assert top_tokens(logits, 3) == [1, 2, 4]
    assert top_tokens(logits, 9) == [1, 2, 4, 0, 3]
    assert top_tokens(logits, 0) == []
    chosen, top = token_logprobs(logits, 3, 0)
    assert top == [] and abs(chosen - (-2.0 - np.log(np.exp(logits.astype(np.float64)).sum()))) < 1e-6
