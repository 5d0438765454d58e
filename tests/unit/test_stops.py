"""StopMatcher: the result never depends on how the text is chunked, and nothing is emitted that a stop could eat."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from faisca.chat import StopMatcher


def run(stops: Sequence[str], chunks: Sequence[str]) -> tuple[str, str | None]:
    """Feed the chunks in order; return everything emitted (flushed at the end if no stop) and the stop."""
    matcher = StopMatcher(stops)
    emitted: list[str] = []
    for chunk in chunks:
        text, stop = matcher.feed(chunk)
        emitted.append(text)
        if stop is not None:
            return "".join(emitted), stop
    emitted.append(matcher.flush())
    return "".join(emitted), None


def reference(stops: Sequence[str], text: str) -> tuple[str, str | None]:
    """The specification, one character at a time: the first stop to be complete wins, ties to the longest."""
    for end in range(1, len(text) + 1):
        done = [stop for stop in stops if stop and text[:end].endswith(stop)]
        if done:
            stop = max(done, key=len)
            return text[: end - len(stop)], stop
    return text, None


def split_at(text: str, cuts: Sequence[int]) -> list[str]:
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


CASES: list[tuple[list[str], str]] = [
    (["###"], "a#b##c###d"),
    (["###"], "no stop here"),
    (["###"], "ends with a partial ##"),
    (["</s>", "\n\nUser:"], "Sure.\n\nUse this.\n\nUser: next"),
    (["ab", "abc"], "xxabcd"),
    (["abc", "ab"], "xxabd"),
    (["bc", "abcd"], "abcd"),
    (["abcd", "c"], "abcabcd"),
    (["aa"], "baaab"),
    (["aab"], "aaab"),
    (["日本語", "🙂🙂"], "こんにちは日本人と🙂日本語🙂🙂"),
    (["é", "ée"], "cafe café"),
    ([], "anything at all ###"),
    (["", "#"], "a#b"),
]


@pytest.mark.parametrize(("stops", "text"), CASES)
def test_whole_text_matches_reference(stops: list[str], text: str) -> None:
    assert run(stops, [text]) == reference(stops, text)


@pytest.mark.parametrize(("stops", "text"), CASES)
def test_every_single_split_gives_the_same_result(stops: list[str], text: str) -> None:
    expected = reference(stops, text)
    for cut in range(len(text) + 1):
        assert run(stops, split_at(text, [cut])) == expected, cut


@pytest.mark.parametrize(("stops", "text"), CASES)
def test_character_by_character_and_random_chunkings_give_the_same_result(stops: list[str], text: str) -> None:
    expected = reference(stops, text)
    assert run(stops, list(text)) == expected
    rng = random.Random(1234)
    for _ in range(200):
        cuts = rng.sample(range(len(text) + 1), rng.randint(0, min(len(text), 6)))
        chunks = split_at(text, cuts)  # may include empty chunks
        assert run(stops, chunks) == expected, chunks


def test_random_texts_over_a_small_alphabet() -> None:
    rng = random.Random(42)
    for _ in range(300):
        stops = ["".join(rng.choice("ab#") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        text = "".join(rng.choice("ab#c") for _ in range(rng.randint(0, 20)))
        expected = reference(stops, text)
        for _ in range(10):
            cuts = rng.sample(range(len(text) + 1), rng.randint(0, min(len(text), 5)))
            assert run(stops, split_at(text, cuts)) == expected, (stops, text, cuts)


def test_stop_across_chunk_boundaries() -> None:
    matcher = StopMatcher(["<end>"])
    assert matcher.feed("Hello <e") == ("Hello ", None)
    assert matcher.feed("n") == ("", None)
    assert matcher.feed("d> ignored") == ("", "<end>")
    assert matcher.matched == "<end>"


def test_prefix_is_held_back_then_released() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("a#") == ("a", None)
    assert matcher.feed("#") == ("", None)
    assert matcher.feed("b") == ("##b", None)
    assert matcher.flush() == ""
    assert run(["###"], ["a", "#", "b"]) == ("a#b", None)


def test_flush_returns_held_text_once() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("done ##") == ("done ", None)
    assert matcher.flush() == "##"
    assert matcher.flush() == ""


def test_text_before_a_stop_in_the_same_chunk_is_emitted() -> None:
    assert StopMatcher(["\n\n"]).feed("one\n\ntwo") == ("one", "\n\n")


def test_done_after_a_match() -> None:
    matcher = StopMatcher(["x"])
    assert matcher.feed("abxcd") == ("ab", "x")
    assert matcher.feed("more x") == ("", "x")
    assert matcher.flush() == ""


def test_one_stop_a_prefix_of_another() -> None:
    # The shorter stop is complete first, so it wins however the text is chunked.
    assert run(["abc", "ab"], ["xab", "c"]) == ("x", "ab")
    assert run(["abc", "ab"], ["xabc"]) == ("x", "ab")
    # A longer stop ending at the same place as a shorter one starts earlier, so it wins.
    assert run(["c", "abc"], ["xabc"]) == ("x", "abc")


def test_multibyte_characters() -> None:
    matcher = StopMatcher(["🙂🙂"])
    assert matcher.feed("olá 🙂") == ("olá ", None)
    assert matcher.feed("é") == ("🙂é", None)
    assert matcher.feed("🙂🙂ñ") == ("", "🙂🙂")


def test_no_stops_passes_text_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("a#b") == ("a#b", None)
    assert matcher.feed("") == ("", None)
    assert matcher.flush() == ""
    assert StopMatcher([""]).feed("abc") == ("abc", None)
