"""The grammars of vLLM's `structured_outputs`, compiled for real (over a byte vocabulary) and fed text."""

from __future__ import annotations

import llguidance
import pytest

from faisca.chat.structured import check_grammar, choice_grammar, regex_grammar
from faisca.errors import InvalidRequest


class _Bytes:
    """A vocabulary of the 256 bytes and an end token: any text is a sequence of its tokens."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([byte]) for byte in range(256)] + [b"<eos>"]
    special_token_ids = [256]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


BYTES = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()))


def matches(grammar: str, text: str) -> bool:
    """Whether `text` is a whole output the compiled grammar allows."""
    matcher = llguidance.LLMatcher(BYTES, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.try_consume_tokens(list(text.encode())) == len(text.encode()) and matcher.is_accepting()


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (r"\d{3}-[a-z]+", ["123-abc"], ["12-abc", "123-abc!", "123-"]),
        ("a/b|c", ["a/b", "c"], ["a", "a/bc"]),  # a `/` closes Lark's /.../ unless escaped
        (r"x\/y", ["x/y"], ["x\\/y"]),
        ("line\nnext", ["line\nnext"], ["line"]),
    ],
)
def test_a_regex_matches_the_whole_output(pattern: str, good: list[str], bad: list[str]) -> None:
    grammar = regex_grammar(pattern)
    check_grammar(grammar, param="p")
    assert all(matches(grammar, text) for text in good)
    assert not any(matches(grammar, text) for text in bad)


def test_choices_are_literal_whatever_they_hold() -> None:
    choices = ["yes", "no", 'say "hi"', "café | /x/", "a\nb", ""]
    grammar = choice_grammar(choices)
    check_grammar(grammar, param="p")
    assert all(matches(grammar, choice) for choice in choices)
    assert not any(matches(grammar, text) for text in ("ye", "yesno", "maybe", "café"))


@pytest.mark.parametrize("grammar", ["start: foo", "start: /(/", "start ::= x", "", 'start: %json {"type": 5}'])
def test_a_grammar_llguidance_cannot_compile_is_a_400_naming_the_field(grammar: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_grammar(grammar, param="structured_outputs.grammar")
    assert caught.value.param == "structured_outputs.grammar"
    assert caught.value.message.startswith("structured_outputs.grammar: cannot constrain the output: ")
