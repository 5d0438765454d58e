from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from faisca.api.openai.completions import to_completion_chunks, to_completion_request
from faisca.catalog import Catalog
from faisca.errors import InvalidRequest, UnsupportedCapability
from faisca.types import ChatEnd, ChatEvent, ChoiceEnd, LogprobsDelta, SampledLogprobs, TextDelta, TokenLogprob, Usage


def test_a_prompt_becomes_a_raw_request_with_the_apis_defaults(catalog: Catalog) -> None:
    request = to_completion_request({"prompt": ["Once"], "n": 2, "logprobs": 0}, catalog.resolve("gemma3:270m"))
    assert (request.raw_prompt, request.messages, request.num_choices) == ("Once", (), 2)
    assert (request.sampling.max_tokens, request.sampling.top_logprobs) == (16, 0)
    with pytest.raises(UnsupportedCapability):
        to_completion_request({"prompt": "x", "n": 2, "best_of": 3}, catalog.resolve("gemma3:270m"))


def test_structured_outputs_constrain_a_raw_prompt_too(catalog: Catalog) -> None:
    request = to_completion_request({"prompt": "Is it?", "structured_outputs": {"choice": ["yes", "no"]}},
                                    catalog.resolve("gemma3:270m"))
    assert request.grammar == 'start: "yes" | "no"'
    with pytest.raises(InvalidRequest) as caught:
        to_completion_request({"prompt": "x", "structured_outputs": {"grammar": "start: ("}},
                              catalog.resolve("gemma3:270m"))
    assert caught.value.param == "structured_outputs.grammar"


def test_streamed_legacy_logprobs_carry_offsets_across_chunks_after_the_echo() -> None:
    def entry(token: bytes, value: float) -> LogprobsDelta:
        return LogprobsDelta(0, SampledLogprobs(TokenLogprob(token, value), (TokenLogprob(b"zz", -3.0),)))

    async def events() -> AsyncIterator[ChatEvent]:
        for event in (entry(b" a", -0.5), TextDelta(0, " a"), entry(b"bc", -0.25), TextDelta(0, "bc"),
                      ChoiceEnd(0, "length"), ChatEnd(Usage(2, 2))):
            yield event

    async def collect() -> list[dict]:
        chunks = to_completion_chunks(events(), completion_id="c", created=1, model="m", echo="Hi",
                                      num_choices=1, include_usage=False)
        return [chunk.model_dump(mode="json")["choices"][0] async for chunk in chunks]

    echo, first, second, end = asyncio.run(collect())
    assert echo["text"] == "Hi" and echo["logprobs"] is None
    assert first["logprobs"] == {"tokens": [" a"], "token_logprobs": [-0.5], "top_logprobs": [{"zz": -3.0, " a": -0.5}],
                                 "text_offset": [2]}
    assert second["logprobs"]["text_offset"] == [4] and end["finish_reason"] == "length"
