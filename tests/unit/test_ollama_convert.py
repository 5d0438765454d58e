from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from faisca.api.ollama.convert import fold_lines, from_chat, from_generate, to_lines
from faisca.catalog import Catalog
from faisca.errors import InvalidRequest
from faisca.types import ChatEnd, ChatEvent, ChoiceEnd, LogprobsDelta, SampledLogprobs, TextDelta, TokenLogprob, Usage


@pytest.mark.parametrize(("fields", "top_logprobs"), [
    ({}, None), ({"top_logprobs": 3}, None), ({"logprobs": True}, 0), ({"logprobs": True, "top_logprobs": 20}, 20),
])
def test_logprobs_and_top_logprobs_are_read(catalog: Catalog, fields: dict, top_logprobs: int | None) -> None:
    card = catalog.resolve("gemma3:270m")
    assert from_generate({"prompt": "hi", **fields}, card).sampling.top_logprobs == top_logprobs
    assert from_chat({"messages": [{"role": "user", "content": "hi"}], **fields}, card).sampling.top_logprobs == top_logprobs


@pytest.mark.parametrize("fields", [{"logprobs": True, "top_logprobs": 21}, {"logprobs": True, "top_logprobs": -1},
                                    {"logprobs": True, "top_logprobs": "3"}, {"logprobs": "yes"}])
def test_bad_logprobs_fields_are_invalid(catalog: Catalog, fields: dict) -> None:
    with pytest.raises(InvalidRequest) as caught:
        from_generate({"prompt": "hi", **fields}, catalog.resolve("gemma3:270m"))
    assert caught.value.param in ("top_logprobs", "logprobs")


def _entry(token: bytes, logprob: float, *top: tuple[bytes, float]) -> SampledLogprobs:
    return SampledLogprobs(TokenLogprob(token, logprob), tuple(TokenLogprob(t, v) for t, v in top))


async def _events() -> AsyncIterator[ChatEvent]:
    yield LogprobsDelta(0, _entry(b"Hi", -0.5, (b"Hi", -0.5)))
    yield TextDelta(0, "Hi")
    yield LogprobsDelta(0, _entry(b"!", -1.0, (b".", -0.75)))  # its text held back: it rides with the final line
    yield ChoiceEnd(0, "length")
    yield ChatEnd(Usage(3, 2))


@pytest.mark.parametrize("chat", [False, True])
def test_logprobs_ride_with_their_line_and_fold_into_one_list(chat: bool) -> None:
    async def collect() -> list[dict]:
        return [line async for line in to_lines(_events(), model="m", chat=chat)]

    lines = asyncio.run(collect())
    assert [len(line.get("logprobs", ())) for line in lines] == [1, 1]
    assert lines[0]["logprobs"] == [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
                                     "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}]}]
    assert lines[1]["done"] and lines[1]["logprobs"][0]["token"] == "!"
    assert [entry["token"] for entry in fold_lines(lines, chat=chat)["logprobs"]] == ["Hi", "!"]
