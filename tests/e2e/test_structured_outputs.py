"""vLLM's `structured_outputs` on the real embedded models, through the official `openai` client (`extra_body`, as
a client written for vLLM sends it). Each answer is checked against its constraint, never against another answer."""

from __future__ import annotations

import json
import re

import openai
import pytest

from tests.e2e.server import GEMMA, SMOLLM2

QUESTION = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]


@pytest.mark.parametrize("model", [GEMMA, SMOLLM2])
def test_a_choice_gives_exactly_one_of_the_choices(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=10,  # type: ignore[arg-type]
                                                extra_body={"structured_outputs": {"choice": ["yes", "no"]}})
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) in {("yes", "stop"), ("no", "stop")}


def test_a_lark_grammar_shapes_the_answer_streamed_too(client: openai.OpenAI) -> None:
    grammar = 'start: "The answer is " NUMBER "."\nNUMBER: /[0-9]{1,3}/'
    messages = [{"role": "user", "content": "What is 6 times 7?"}]
    stream = client.chat.completions.create(  # type: ignore[call-overload]
        model=SMOLLM2, messages=messages, max_tokens=20, stream=True,
        extra_body={"structured_outputs": {"grammar": grammar}})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert re.fullmatch(r"The answer is [0-9]{1,3}\.", text), text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_json_schema_and_a_regex_on_the_completions_api(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"year": {"type": "integer"}}, "required": ["year"]}
    chat = client.chat.completions.create(
        model=GEMMA, messages=[{"role": "user", "content": "When did the war end?"}], max_tokens=40,
        extra_body={"structured_outputs": {"json": schema}})
    assert isinstance(json.loads(chat.choices[0].message.content or "")["year"], int)
    completion = client.completions.create(model=GEMMA, prompt="My favourite colour is", max_tokens=12,
                                           extra_body={"structured_outputs": {"regex": r" [a-z]{3,8}!"}})
    assert re.fullmatch(r" [a-z]{3,8}!", completion.choices[0].text)


def test_a_broken_grammar_is_a_400_naming_the_field_and_the_server_goes_on(client: openai.OpenAI) -> None:
    refused = [({"grammar": "start: undefined_rule"}, "structured_outputs.grammar"),
               ({"regex": "(a"}, "structured_outputs.regex"),
               ({"choice": ["a"], "regex": "a"}, "structured_outputs")]
    for structured, param in refused:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=GEMMA, messages=QUESTION, max_tokens=5,  # type: ignore[arg-type]
                                           extra_body={"structured_outputs": structured})
        assert caught.value.param == param
    after = client.chat.completions.create(model=GEMMA, messages=QUESTION, max_tokens=3)  # type: ignore[arg-type]
    assert after.choices[0].message.content
