"""Reading request bodies: strict JSON, errors naming the field, no exception but `InvalidRequest` for any bytes."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from faisca.api.body import parse_json_object, read_request
from faisca.errors import InvalidRequest, PayloadTooLarge
from faisca.limits import MAX_INLINE_BODY_BYTES, MAX_JSON_DEPTH


def invalid(raw: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_json_object(raw)
    return caught.value


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"temperature": NaN}', "temperature"),
    (b'{"temperature": Infinity}', "temperature"),
    (b'{"temperature": -Infinity}', "temperature"),
    (b'{"temperature": 1e400}', "temperature"),
    (b'{"temperature": -1e400}', "temperature"),
    (b'{"options": {"top_k": Infinity}}', "options.top_k"),
    (b'{"logit_bias": {"5": NaN}}', "logit_bias.5"),
    (b'{"messages": [{"role": "user", "content": "hi"}, {"x": [1, 2, NaN]}]}', "messages.1.x.2"),
])
def test_non_finite_numbers_are_refused_naming_the_field(raw: bytes, param: str) -> None:
    error = invalid(raw)
    assert error.param == param and "finite" in error.message and error.message.startswith(f"{param}: ")


def test_finite_numbers_pass() -> None:
    assert parse_json_object(b'{"a": 1e308, "b": -0.0, "c": 5e-324, "d": 12345678901234567890}')["d"] == 12345678901234567890


def nested(levels: int) -> bytes:
    return b'{"a": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


def test_nesting_up_to_the_limit_passes_and_deeper_is_refused() -> None:
    parse_json_object(nested(MAX_JSON_DEPTH))
    error = invalid(nested(MAX_JSON_DEPTH + 1))
    assert error.param == "a" and "nested too deeply" in error.message


@pytest.mark.parametrize("levels", [1_000, 100_000])
def test_nesting_past_the_parsers_recursion_is_a_clean_error(levels: int) -> None:
    assert "nested too deeply" in invalid(b"[" * levels + b"]" * levels).message
    assert "nested too deeply" in invalid(nested(levels)).message


def test_integers_of_thousands_of_digits_are_refused() -> None:
    assert "integer too long" in invalid(b'{"seed": ' + b"9" * 5000 + b"}").message


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"messages": [{"content": "\\ud800"}]}', "messages.0.content"),
    (b'{"stop": ["ok", "a\\udfffb"]}', "stop.1"),
    (b'{"\\udc00": 1}', "\udc00"),
])
def test_unpaired_surrogates_are_refused(raw: bytes, param: str) -> None:
    error = invalid(raw)
    assert error.param == param and "surrogate" in error.message


def test_paired_surrogates_are_text() -> None:
    assert parse_json_object(b'{"content": "\\ud83d\\ude00"}')["content"] == "\N{GRINNING FACE}"


@pytest.mark.parametrize(("raw", "words"), [
    (b'{"model": ', "not valid JSON"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b"", "not valid JSON"),
])
def test_malformed_bodies(raw: bytes, words: str) -> None:
    assert words in invalid(raw).message


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet='{}[]":,0123456789.eE+-NaInfity\\ud8', max_size=200).map(str.encode))
def test_any_bytes_are_an_object_or_invalid_request(raw: bytes) -> None:
    try:
        assert isinstance(parse_json_object(raw), dict)
    except InvalidRequest:
        pass


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
                    max_leaves=30))
def test_any_json_value_is_accepted_exactly_when_finite(value: object) -> None:
    raw = json.dumps({"v": value}).encode()
    try:
        assert parse_json_object(raw) == {"v": value}
    except InvalidRequest as error:
        assert "finite" in error.message
    else:
        json.dumps(value, allow_nan=False)  # it had no NaN or infinity


def request_of(raw: bytes) -> Request:
    chunks = [raw[start:start + 65536] for start in range(0, len(raw), 65536)] or [b""]

    async def receive() -> dict[str, object]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


@pytest.mark.parametrize(("num_messages", "off_loop"), [(1, False), (20_000, True)])
def test_large_bodies_are_parsed_and_checked_off_the_event_loop(num_messages: int, off_loop: bool) -> None:
    raw = json.dumps({"messages": [{"role": "user", "content": "hi"}] * num_messages}).encode()
    assert (len(raw) > MAX_INLINE_BODY_BYTES) == off_loop

    async def read() -> tuple[int, bool]:
        loop_thread = threading.get_ident()
        return await read_request(request_of(raw), max_bytes=len(raw),
                                  parse=lambda body: (len(body["messages"]), threading.get_ident() != loop_thread))

    assert asyncio.run(read()) == (num_messages, off_loop)


def test_bodies_over_the_byte_limit_are_413() -> None:
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_request(request_of(b"{}" + b" " * 100), max_bytes=50, parse=lambda body: body))
