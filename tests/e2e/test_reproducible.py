"""Temperature 0 is reproducible (README "Reproducibility"): the same request gives the same text cold, with its
prompt in the prefix cache, and batched beside other requests whose long prompts are split across steps and push
the attended KV cells past 512. Exact equality of 64 tokens and of their log-probabilities, not "the first few
tokens": the engine's settings make a token's numbers independent of the batch around it, so nothing can round
apart (the log-probabilities show a difference long before a near tie of the text would).

A server of its own: its KV cache starts empty, so every sequence's cells follow its positions in order (the one
case the README lists as not exact is a sequence whose later cells come before its earlier ones)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.e2e.server import GEMMA, RunningServer, serving

# Gemma 3's end-of-generation tokens (<eos>, <end_of_turn>) banned: every answer is 64 tokens long.
NO_END = {"1": -100, "106": -100}
REQUEST = {"model": GEMMA, "max_tokens": 64, "temperature": 0, "logit_bias": NO_END, "logprobs": True,
           "messages": [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]}


def answer(completion: ChatCompletion) -> tuple[str | None, list[float]]:
    """The text and each token's log-probability."""
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    return completion.choices[0].message.content, [token.logprob for token in logprobs.content]


def neighbour(index: int) -> dict:
    """A request with a ~300-token prompt of its own, which stops early so that the request under test goes on
    decoding alone over the cells the neighbours left."""
    notes = " ".join(f"Note {n}: the tide at bay {index} rose {n % 7} feet." for n in range(25))
    return {"model": GEMMA, "max_tokens": 8 + index, "temperature": 0, "logit_bias": NO_END,
            "messages": [{"role": "user", "content": f"Summarise these notes. {notes}"}]}


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serving(tmp_path_factory.mktemp("reproducible"), "--model", "gemma3:270m", "--ctx-size", "2048") as running:
        yield running


def test_temperature_0_gives_the_same_text_cold_cached_and_batched(own_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{own_server.base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    cold = client.chat.completions.create(**REQUEST)  # type: ignore[arg-type]
    cached = client.chat.completions.create(**REQUEST)  # type: ignore[arg-type]
    assert cached.usage is not None and cached.usage.prompt_tokens_details is not None
    assert cached.usage.prompt_tokens_details.cached_tokens == cached.usage.prompt_tokens - 1

    async def batched() -> tuple[str | None, list[float]]:
        async_client = openai.AsyncOpenAI(base_url=f"{own_server.base_url}/v1", api_key="unused", max_retries=0,
                                          timeout=300)
        results = await asyncio.gather(*(async_client.chat.completions.create(**body)  # type: ignore[arg-type]
                                         for body in (neighbour(0), REQUEST, neighbour(1), neighbour(2))))
        assert all(result.usage is not None and result.usage.completion_tokens == body["max_tokens"]
                   for result, body in zip(results, (neighbour(0), REQUEST, neighbour(1), neighbour(2))))
        return answer(results[1])

    assert cold.usage is not None and cold.usage.completion_tokens == 64
    assert answer(cached) == answer(cold)
    assert asyncio.run(batched()) == answer(cold)


def test_the_same_request_beside_itself_gives_the_same_text(own_server: RunningServer) -> None:
    """Three copies at once: one computes the prompt (or takes it from the cache), the others start from its cells."""
    async def run() -> list[tuple[str | None, list[float]]]:
        async_client = openai.AsyncOpenAI(base_url=f"{own_server.base_url}/v1", api_key="unused", max_retries=0,
                                          timeout=300)
        body = {**REQUEST, "messages": [{"role": "user", "content": "Describe a harbour at dawn in a few lines."}]}
        alone = await async_client.chat.completions.create(**body)  # type: ignore[arg-type]
        copies = (async_client.chat.completions.create(**body) for _ in range(3))  # type: ignore[arg-type]
        together = await asyncio.gather(*copies)
        return [answer(alone), *(answer(result) for result in together)]

    answers = asyncio.run(run())
    assert answers[0][0] and answers.count(answers[0]) == len(answers)
