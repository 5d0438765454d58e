from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from faisca.api.openai.convert import to_chat_completion, to_chat_request, to_chunks, without_null_message_fields
from faisca.catalog import Catalog
from faisca.chat.structured import json_grammar
from faisca.errors import InvalidRequest, UnsupportedCapability
from faisca.service import fold_chat
from faisca.types import (
    ChatEnd, ChatEvent, ChoiceEnd, ImagePart, LogprobsDelta, SampledLogprobs, TextDelta, TextPart, TokenLogprob, Usage,
)


def test_wire_request_becomes_a_neutral_request(catalog: Catalog) -> None:
    card = catalog.resolve("gemma3:27b")
    body = {
        "model": "gemma3:27b",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}}]},
        ],
        "temperature": 0.2, "top_p": 0.9, "top_k": -1, "n": 2, "max_tokens": 50, "max_completion_tokens": 30,
        "presence_penalty": 0.1, "frequency_penalty": 0.3, "stop": "END", "seed": 9, "logit_bias": None,
    }
    chat = to_chat_request(body, card)
    assert chat.model_id == "ista-daslab-gemma-3-27b-it-gptq-4b-128g"
    assert chat.messages[1].content == (TextPart("what?"), ImagePart("https://x/y.jpg"))
    sampling = chat.sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.max_tokens, sampling.stop, sampling.seed) == (
        0.2, 0.9, 0, 30, ("END",), 9)
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (0.1, 0.3)
    assert chat.num_choices == 2


def test_nulls_mean_defaults(catalog: Catalog) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": None, "max_tokens": None, "stop": None, "n": None}
    chat = to_chat_request(body, catalog.resolve("gemma3:270m"))
    assert (chat.sampling.temperature, chat.sampling.max_tokens, chat.sampling.stop, chat.num_choices) == (1.0, None, (), 1)


def test_null_and_empty_message_fields_are_dropped() -> None:
    body = {"messages": [{"role": "assistant", "content": "x", "tool_calls": [], "name": None}, "junk"]}
    assert without_null_message_fields(body)["messages"] == [{"role": "assistant", "content": "x"}, "junk"]


async def _events() -> AsyncIterator[ChatEvent]:
    for event in (TextDelta(0, "Hi"), ChoiceEnd(0, "stop", "END"), TextDelta(1, "Yo"), ChoiceEnd(1, "length"), ChatEnd(Usage(3, 4))):
        yield event


async def _chunks(include_usage: bool) -> list[dict]:
    chunks = to_chunks(_events(), completion_id="chatcmpl-1", created=1, model="m", num_choices=2, include_usage=include_usage)
    return [chunk.model_dump(mode="json") async for chunk in chunks]


def test_chunks_open_each_choice_with_its_role_then_content_then_the_end() -> None:
    chunks = asyncio.run(_chunks(include_usage=True))
    deltas = [(c["choices"][0]["index"], c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks if c["choices"]]
    assert deltas == [
        (0, {"role": "assistant", "content": ""}, None),
        (1, {"role": "assistant", "content": ""}, None),
        (0, {"content": "Hi"}, None),
        (0, {}, "stop"),
        (1, {"content": "Yo"}, None),
        (1, {}, "length"),
    ]
    assert chunks[3]["choices"][0]["stop_reason"] == "END"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7


def test_no_usage_chunk_unless_asked() -> None:
    assert all(chunk["choices"] for chunk in asyncio.run(_chunks(include_usage=False)))


@pytest.mark.parametrize(("fields", "top_logprobs"), [
    ({}, None), ({"logprobs": False}, None), ({"logprobs": False, "top_logprobs": 0}, None),
    ({"logprobs": True}, 0), ({"logprobs": True, "top_logprobs": None}, 0), ({"logprobs": True, "top_logprobs": 5}, 5),
])
def test_logprobs_become_the_number_of_alternatives(catalog: Catalog, fields: dict, top_logprobs: int | None) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **fields}
    assert to_chat_request(body, catalog.resolve("gemma3:270m")).sampling.top_logprobs == top_logprobs


def test_top_logprobs_without_logprobs_is_invalid_and_prompt_logprobs_refused(catalog: Catalog) -> None:
    card = catalog.resolve("gemma3:270m")
    with pytest.raises(InvalidRequest) as invalid:
        to_chat_request({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, card)
    assert invalid.value.param == "top_logprobs" and "logprobs" in invalid.value.message
    with pytest.raises(UnsupportedCapability) as refused:
        to_chat_request({"messages": [{"role": "user", "content": "hi"}], "prompt_logprobs": 1}, card)
    assert refused.value.param == "prompt_logprobs"


def _entry(token: bytes, logprob: float, *top: tuple[bytes, float]) -> SampledLogprobs:
    return SampledLogprobs(TokenLogprob(token, logprob), tuple(TokenLogprob(t, v) for t, v in top))


def test_logprobs_ride_with_the_chunk_of_their_text_and_held_back_ones_with_the_end() -> None:
    async def events() -> AsyncIterator[ChatEvent]:
        yield LogprobsDelta(0, _entry(b"Hi", -0.5, (b"Hi", -0.5), (b"Yo", -1.5)))
        yield TextDelta(0, "Hi")
        yield LogprobsDelta(0, _entry(b" E", -0.25, (b" E", -0.25), (b"\xe2", -2.0)))  # held back: a stop string may start
        yield LogprobsDelta(0, _entry(b"<end>", -0.125, (b"<end>", -0.125), (b"\xe2", -3.0)))
        yield ChoiceEnd(0, "stop")
        yield ChatEnd(Usage(3, 3))

    async def collect() -> list[dict]:
        chunks = to_chunks(events(), completion_id="c", created=1, model="m", num_choices=1, include_usage=False)
        return [chunk.model_dump(mode="json") async for chunk in chunks]

    role, text, end = (chunk["choices"][0] for chunk in asyncio.run(collect()))
    assert role["logprobs"] is None
    assert text["delta"] == {"content": "Hi"} and text["logprobs"] == {"content": [
        {"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": [
            {"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}, {"token": "Yo", "logprob": -1.5, "bytes": [89, 111]}]}]}
    assert end["finish_reason"] == "stop"
    assert [entry["token"] for entry in end["logprobs"]["content"]] == [" E", "<end>"]
    assert end["logprobs"]["content"][0]["top_logprobs"][1] == {"token": "\ufffd", "logprob": -2.0, "bytes": [0xE2]}


def test_a_completion_without_logprobs_asked_has_null_and_with_them_one_entry_per_token() -> None:
    async def events(with_logprobs: bool) -> AsyncIterator[ChatEvent]:
        if with_logprobs:
            yield LogprobsDelta(0, _entry(b"ok", -0.1))
        yield TextDelta(0, "ok")
        yield ChoiceEnd(0, "length")
        yield ChatEnd(Usage(2, 1))

    for with_logprobs in (False, True):
        result = asyncio.run(fold_chat(events(with_logprobs)))
        choice = to_chat_completion(result, completion_id="c", created=1, model="m").model_dump(mode="json")["choices"][0]
        expected = {"content": [{"token": "ok", "logprob": -0.1, "bytes": [111, 107], "top_logprobs": []}]}
        assert choice["logprobs"] == (expected if with_logprobs else None)


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def test_tools_and_structured_output_are_converted(catalog: Catalog) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": False,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}
    chat = to_chat_request(body, catalog.resolve("gemma3:270m"))
    assert [tool.name for tool in chat.tools] == ["get_weather"]
    assert (chat.tool_choice, chat.parallel_tool_calls) == ("get_weather", False)
    assert chat.response_format is not None and chat.response_format.schema_json == '{"type": "object"}'


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]}, "tools.0.function.parameters"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nope"}}}},
         "response_format.json_schema.schema"),
    ],
)
def test_bad_tools_and_formats_are_400_naming_the_field(catalog: Catalog, extra: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat_request({"messages": [{"role": "user", "content": "hi"}], **extra}, catalog.resolve("gemma3:270m"))
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("structured", "grammar"),
    [
        ({"grammar": 'start: "a" | "b"'}, 'start: "a" | "b"'),  # as it is
        ({"choice": ["yes", 'say "no"']}, 'start: "yes" | "say \\"no\\""'),
        ({"regex": "a/b+"}, "start: /a\\/b+/"),
        ({"json": {"type": "integer"}, "regex": None, "json_object": False}, json_grammar({"type": "integer"})),
        ({"json": '{"type": "integer"}'}, json_grammar({"type": "integer"})),  # vLLM takes the schema as text too
        ({"json_object": True}, json_grammar(None)),
    ],
)
def test_structured_outputs_become_the_grammar_of_the_output(catalog: Catalog, structured: dict, grammar: str) -> None:
    chat = to_chat_request({"messages": [{"role": "user", "content": "hi"}], "structured_outputs": structured},
                           catalog.resolve("gemma3:270m"))
    assert (chat.grammar, chat.response_format, chat.tools) == (grammar, None, ())


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"structured_outputs": {}}, "structured_outputs", "(got none)"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs", "(got regex, choice)"),
        ({"structured_outputs": {"grammar": "a"}, "response_format": {"type": "json_object"}}, "structured_outputs",
         "response_format"),
        ({"structured_outputs": {"grammar": "a"}, "tools": [WEATHER]}, "structured_outputs", "tools"),
        ({"structured_outputs": {"grammar": "start: rule_not_defined"}}, "structured_outputs.grammar", "unknown name"),
        ({"structured_outputs": {"regex": "(unclosed"}}, "structured_outputs.regex", "unclosed group"),
        ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json", "not valid JSON"),
        ({"structured_outputs": {"json": {"type": "nope"}}}, "structured_outputs.json", "not a valid JSON Schema"),
    ],
)
def test_bad_or_mixed_structured_outputs_are_400_naming_the_field(catalog: Catalog, extra: dict, param: str,
                                                                   words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat_request({"messages": [{"role": "user", "content": "hi"}], **extra}, catalog.resolve("gemma3:270m"))
    assert caught.value.param == param and words in caught.value.message


def test_structured_outputs_beside_a_text_response_format_is_fine(catalog: Catalog) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "structured_outputs": {"choice": ["a"]},
            "response_format": {"type": "text"}, "tools": []}
    assert to_chat_request(body, catalog.resolve("gemma3:270m")).grammar == 'start: "a"'


def test_vllm_sampling_extras_are_read_and_min_tokens_bounded(catalog: Catalog) -> None:
    card = catalog.resolve("gemma3:270m")
    body = {"messages": [{"role": "user", "content": "hi"}], "ignore_eos": True, "min_tokens": 3,
            "stop_token_ids": [106, 1], "include_stop_str_in_output": True, "max_tokens": 5}
    sampling = to_chat_request(body, card).sampling
    assert (sampling.ignore_eos, sampling.min_tokens, sampling.stop_token_ids, sampling.include_stop_str_in_output) == (
        True, 3, (106, 1), True)
    defaults = to_chat_request({"messages": body["messages"], "stop_token_ids": None, "min_tokens": None}, card).sampling
    assert (defaults.ignore_eos, defaults.min_tokens, defaults.stop_token_ids) == (False, 0, ())
    with pytest.raises(InvalidRequest) as caught:
        to_chat_request({**body, "min_tokens": 6}, card)
    assert caught.value.param == "min_tokens"


def test_integral_floats_in_integer_fields_become_ints() -> None:
    """JSON Schema's `integer` takes 2.0; ranges, ctypes and numpy then need a real int (a fuzzer found the 500)."""
    from faisca.catalog import Catalog

    card = Catalog.from_dirs().resolve("smollm2")
    request = to_chat_request({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "n": 2.0,
                                       "max_tokens": 5.0, "seed": 7.0, "top_k": 3.0, "min_tokens": 1.0,
                                       "stop_token_ids": [2.0]}, card)
    values = (request.num_choices, request.sampling.max_tokens, request.sampling.seed, request.sampling.top_k,
              request.sampling.min_tokens, request.sampling.stop_token_ids[0])
    assert values == (2, 5, 7, 3, 1, 2) and all(type(value) is int for value in values)
