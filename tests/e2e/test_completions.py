"""`/v1/completions` (the legacy text completion API) on the real embedded model, through the official `openai`
client: the natural API for a base model such as Gemma 3 270M."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.server import GEMMA
from tests.e2e.test_errors import assert_error

PROMPT = "The capital of France is"


def test_a_prompt_is_continued_as_is_without_the_chat_template(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=GEMMA, prompt=PROMPT, max_tokens=8, temperature=0)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-") and completion.model == GEMMA
    [choice] = completion.choices
    assert choice.text and choice.finish_reason in ("length", "stop")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 6  # <bos> and the five tokens of the prompt: no template around it
    default = client.completions.create(model=GEMMA, prompt=PROMPT, temperature=0, logit_bias={"1": -100})
    assert default.usage is not None and default.usage.completion_tokens == 16  # the API's default max_tokens


def test_streaming_echo_n_and_usage(client: openai.OpenAI) -> None:
    asked = {"model": GEMMA, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, "logit_bias": {"1": -100, "106": -100}}
    whole = client.completions.create(**asked, n=2, echo=True)  # type: ignore[call-overload]
    assert [choice.text.startswith(PROMPT) for choice in whole.choices] == [True, True]
    assert whole.choices[0].text == whole.choices[1].text  # greedy: both choices alike
    chunks = list(client.completions.create(**asked, n=2, echo=True, stream=True,  # type: ignore[call-overload]
                                            stream_options={"include_usage": True}))
    for index in (0, 1):
        assert "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == index) == \
            whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


def test_logprobs_in_the_legacy_lists(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=GEMMA, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3,
                                           logit_bias={"1": -100, "106": -100})
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens is not None and logprobs.top_logprobs is not None
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(6)]
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs or [], logprobs.top_logprobs, strict=True):
        assert value <= 0 and top[token] == value and max(top.values()) == value  # greedy: the likeliest
        assert 1 <= len(top) <= 3


@pytest.mark.parametrize(("fields", "param"), [
    ({"prompt": 5}, "prompt"),
    ({}, "prompt"),
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": PROMPT, "suffix": "!"}, "suffix"),
    ({"prompt": PROMPT, "best_of": 3}, "best_of"),
    ({"prompt": PROMPT, "echo": True, "logprobs": 1}, "echo"),
    ({"prompt": PROMPT, "logprobs": 21}, "logprobs"),
    ({"prompt": PROMPT, "max_tokens": 1_000_000}, "max_tokens"),
])
def test_bad_completion_requests_are_400_naming_the_field(http: httpx.Client, fields: dict, param: str) -> None:
    assert_error(http.post("/v1/completions", json={"model": GEMMA, **fields}), 400, param=param)


def test_an_unknown_model_is_404(http: httpx.Client) -> None:
    assert_error(http.post("/v1/completions", json={"model": "no-such-model", "prompt": "hi"}), 404, param="model")
