from __future__ import annotations

import pytest

from faisca.chat.fit import conversation_cuts, longest_fitting
from faisca.types import Message


def conversation(*roles: str) -> list[Message]:
    return [Message(role, f"{role} {index}") for index, role in enumerate(roles)]  # type: ignore[arg-type]


def test_cuts_leave_out_the_oldest_turns_keeping_system_messages_and_starting_at_a_user_turn() -> None:
    messages = conversation("system", "user", "assistant", "user", "assistant", "tool", "user")
    assert list(conversation_cuts(messages)) == [(0, 1, 2, 3, 4, 5, 6), (0, 3, 4, 5, 6), (0, 6)]


def test_a_conversation_opening_with_an_answer_loses_it_first_and_one_turn_has_nothing_to_leave_out() -> None:
    assert list(conversation_cuts(conversation("assistant", "user"))) == [(0, 1), (1,)]
    assert list(conversation_cuts(conversation("system", "user"))) == [(0, 1)]
    assert list(conversation_cuts(conversation("user", "system", "assistant", "user"))) == [(0, 1, 2, 3), (1, 3)]


def test_cuts_are_built_when_asked_for_and_index_like_a_list() -> None:
    messages = conversation("system", *["user", "assistant"] * 5000, "user")
    cuts = conversation_cuts(messages)
    assert len(cuts) == 5001
    assert cuts[-1] == (0, 10001)
    assert cuts[4999] == (0, 9999, 10000, 10001)
    assert cuts[:2] == [tuple(range(10002)), (0, *range(3, 10002))]


@pytest.mark.parametrize("num_cuts", [1, 2, 3, 7, 100, 5001])
def test_the_longest_fitting_cut_is_found_with_few_tries_mostly_of_short_cuts(num_cuts: int) -> None:
    for answer in sorted({0, 1, num_cuts // 2, num_cuts - 2, num_cuts - 1} & set(range(num_cuts))):
        tried: list[int] = []

        def fits(cut: int) -> bool:
            tried.append(cut)
            return cut >= answer

        assert longest_fitting(num_cuts, fits) == answer
        assert len(tried) <= 2 + 2 * max(1, num_cuts).bit_length()
        # beyond the one whole render, the tries render a logarithmic number of times about what is finally kept
        num_kept = num_cuts - answer
        assert sum(num_cuts - cut for cut in tried[1:]) <= 2 * num_kept * (num_kept.bit_length() + 1)


def test_when_nothing_fits_the_shortest_cut_is_the_answer() -> None:
    assert longest_fitting(5, lambda cut: False) == 4
