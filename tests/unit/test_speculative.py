"""Prompt-lookup speculation: proposals, the verifying walk, back-off."""

from __future__ import annotations

import pytest

from faisca.engine.speculative import MAX_BACKOFF_STEPS, Backoff, SpeculationConfig, propose_ngram, verify


def test_the_longest_ngram_that_occurs_before_wins():
    # ... 1 2 3 [7 8] ... 9 2 3 [5 6] ... 2 3: the trigram (x 2 3) never recurs, the bigram (2 3) does, last at 6
    tokens = [1, 2, 3, 7, 8, 9, 2, 3, 5, 6, 4, 2, 3]
    assert propose_ngram(tokens, max_tokens=2) == [5, 6]
    # with the trigram present, it wins over a later bigram
    tokens = [1, 2, 3, 7, 8, 9, 2, 3, 5, 6, 1, 2, 3]
    assert propose_ngram(tokens, max_tokens=3) == [7, 8, 9]


def test_the_proposal_stops_at_max_tokens_and_at_the_end():
    tokens = [5, 6, 7, 8, 5, 6]
    assert propose_ngram(tokens, max_tokens=10) == [7, 8, 5, 6]
    assert propose_ngram(tokens, max_tokens=1) == [7]
    assert propose_ngram(tokens, max_tokens=0) == []


def test_no_match_no_proposal():
    assert propose_ngram([1, 2, 3, 4], max_tokens=4) == []
    assert propose_ngram([1], max_tokens=4) == []
    assert propose_ngram([], max_tokens=4) == []
    # a unigram match only when min_ngram allows it
    assert propose_ngram([4, 9, 4], max_tokens=2) == [9, 4]
    assert propose_ngram([4, 9, 4], max_tokens=2, min_ngram=2) == []


def test_the_most_recent_occurrence_is_copied():
    tokens = [1, 2, 10, 1, 2, 20, 1, 2]
    assert propose_ngram(tokens, max_tokens=1, max_ngram=2) == [20]


def test_image_placeholders_are_never_proposed_nor_matched():
    assert propose_ngram([3, 4, -7, -7, 3, 4], max_tokens=4) == []  # (3 4) is followed by an image
    assert propose_ngram([3, 4, 5, -7, 3, 4], max_tokens=4) == [5]
    assert propose_ngram([-7, -7, 1, -7, -7], max_tokens=4) == []


def test_a_repeated_token_proposes_its_run():
    assert propose_ngram([9, 9, 9, 9], max_tokens=3) == [9]  # (9 9 9) occurs at 0, followed by one 9


def walk(drafts, targets, *, ends_after=None):
    """verify() over a target that samples `targets` row by row; the sequence ends after `ends_after` tokens."""
    sampled = []

    def sample_row(row):
        assert row == len(sampled), "rows are sampled in order, once each"
        sampled.append(targets[row])
        return None if ends_after is not None and len(sampled) >= ends_after else targets[row]

    return verify(drafts, sample_row), sampled


def test_every_draft_accepted_then_the_bonus_token():
    assert walk([1, 2, 3], [1, 2, 3, 4]) == (3, [1, 2, 3, 4])


def test_the_first_mismatch_ends_the_walk_and_is_kept():
    assert walk([1, 2, 3], [1, 5, 3, 4]) == (1, [1, 5])
    assert walk([1, 2, 3], [7, 2, 3, 4]) == (0, [7])


def test_a_sequence_that_ends_ends_the_walk():
    assert walk([1, 2, 3], [1, 2, 3, 4], ends_after=2) == (1, [1, 2])


def test_backoff_doubles_after_nothing_accepted_and_resets():
    backoff = Backoff()
    assert backoff.wants_draft()
    backoff.record(4, 0)
    assert [backoff.wants_draft() for _ in range(2)] == [False, True]
    backoff.record(4, 0)
    assert [backoff.wants_draft() for _ in range(3)] == [False, False, True]
    backoff.record(4, 1)
    assert backoff.wants_draft()
    for _ in range(10):
        backoff.record(4, 0)
    assert sum(not backoff.wants_draft() for _ in range(100)) == MAX_BACKOFF_STEPS


def test_no_draft_changes_nothing():
    backoff = Backoff()
    backoff.record(0, 0)
    assert backoff.wants_draft()


def test_config_is_checked():
    with pytest.raises(ValueError):
        SpeculationConfig(max_draft_tokens=0)
    with pytest.raises(ValueError):
        SpeculationConfig(min_ngram=3, max_ngram=2)


def test_draft_length_follows_what_was_accepted():
    backoff = Backoff()
    assert backoff.max_tokens(6) == 6
    backoff.record(6, 2)  # a run of 2 accepted: next time 3
    assert backoff.max_tokens(6) == 3
    backoff.record(3, 3)  # all accepted: twice as many
    assert backoff.max_tokens(10) == 6
    backoff.record(6, 0)  # none: one, after a pause
    assert backoff.max_tokens(10) == 1
