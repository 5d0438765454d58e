from __future__ import annotations

from faisca.chat.fit import conversation_cuts
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
