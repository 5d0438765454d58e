"""No body makes a 5xx: property-based bodies for both surfaces (hypothesis), and schemathesis over the app's
OpenAPI document, against a real server with a small context (so that what does generate stays short).

A 200 must also carry no in-band "the server had an error" (a failure after the status line)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

schemathesis = pytest.importorskip("schemathesis")  # the `test` extra has it
from schemathesis.checks import not_a_server_error  # noqa: E402

from faisca.api.app import create_app  # noqa: E402
from faisca.catalog import Catalog  # noqa: E402
from faisca.config import Settings  # noqa: E402
from faisca.registry import ModelRegistry  # noqa: E402
from tests.e2e.server import SMOLLM2, RunningServer, serving  # noqa: E402

CONTEXT_TOKENS = 128  # what a body the server accepts may generate, at most
SERVER_ERROR = "The server had an error"


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serving(tmp_path_factory.mktemp("fuzz"), "--model", "smollm2", "--ctx-size", str(CONTEXT_TOKENS)) as running:
        yield running


@pytest.fixture(scope="module")
def small_http(small_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small_server.base_url, timeout=120) as session:
        yield session


def assert_no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert SERVER_ERROR not in response.text, response.text


# Any JSON value (numbers include NaN, infinities and integers past 64 bits), to put where a field is expected.
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats()
           | st.text(max_size=12))
ANY = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=3), max_leaves=6)


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything at all."""
    return st.one_of(valid, valid, valid, valid, valid, ANY)


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
TOOL = field(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": field(st.sampled_from(["get_weather", "lookup"]))},
    optional={"description": field(st.text(max_size=10)), "parameters": field(st.just(SCHEMA))})}))
SAMPLING = {
    "temperature": field(st.floats(0, 2)),
    "top_p": field(st.floats(0, 1)),
    "top_k": field(st.integers(-1, 50)),
    "min_p": field(st.floats(0, 1)),
    "seed": field(st.integers(-(2**63), 2**64 - 1)),
    "presence_penalty": field(st.floats(-2, 2)),
    "frequency_penalty": field(st.floats(-2, 2)),
}
OPENAI_MESSAGE = field(st.fixed_dictionaries(
    {"role": field(st.sampled_from(["system", "user", "assistant", "tool"])), "content": field(st.text(max_size=20))},
    optional={"tool_call_id": field(st.text(max_size=4)), "tool_calls": field(st.lists(st.fixed_dictionaries({
        "id": st.just("call_1"), "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.just("lookup"), "arguments": field(st.just('{"a": 1}'))})}),
        max_size=1))}))
OPENAI_OPTIONAL = {
    **SAMPLING,
    "n": field(st.integers(1, 2)),
    "stream": field(st.booleans()),
    "stop": field(st.lists(st.text(max_size=3), max_size=5) | st.text(max_size=3)),
    "logit_bias": field(st.dictionaries(st.integers(0, 50_000).map(str), st.floats(-100, 100), max_size=3)),
    "stop_token_ids": field(st.lists(st.integers(0, 60_000), max_size=3)),
    "min_tokens": field(st.integers(0, 3)),
    "ignore_eos": field(st.booleans()),
    "logprobs": field(st.booleans()),
    "top_logprobs": field(st.integers(0, 20)),
    "repetition_penalty": field(st.floats(0.5, 2)),
    "response_format": field(st.sampled_from([{"type": "text"}, {"type": "json_object"},
                                              {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}])),
    "tools": field(st.lists(TOOL, max_size=2)),
    "tool_choice": field(st.sampled_from(["auto", "none", "required"])),
}
# max_tokens is always small (OpenAI refuses more than the context holds, so it bounds every generation)
OPENAI_CHAT = st.fixed_dictionaries(
    {"model": st.just(SMOLLM2), "messages": field(st.lists(OPENAI_MESSAGE, min_size=1, max_size=3)),
     "max_tokens": st.integers(1, 3)}, optional=OPENAI_OPTIONAL)
OPENAI_COMPLETION = st.fixed_dictionaries(
    {"model": st.just(SMOLLM2), "prompt": field(st.text(max_size=20)), "max_tokens": st.integers(1, 3)},
    optional={**{key: OPENAI_OPTIONAL[key] for key in ("temperature", "top_k", "seed", "stop", "stream", "n")},
              "echo": field(st.booleans()), "logprobs": field(st.integers(0, 5))})

# Ollama fits generation to the context: num_predict is always small, or `options` is not an object at all.
OPTIONS = st.fixed_dictionaries(
    {"num_predict": st.integers(1, 3)},
    optional={**SAMPLING, "repeat_penalty": field(st.floats(0.5, 2)), "num_ctx": field(st.integers(0, 512)),
              "stop": field(st.lists(st.text(max_size=3), max_size=5)), "num_thread": ANY})
OLLAMA_OPTIONS = st.one_of(OPTIONS, OPTIONS, ANY.filter(lambda value: not isinstance(value, dict)))
OLLAMA_MESSAGE = field(st.fixed_dictionaries(
    {"role": field(st.sampled_from(["system", "user", "assistant", "tool"])), "content": field(st.text(max_size=20))},
    optional={"images": field(st.lists(st.just("aGk="), max_size=1)), "tool_name": field(st.just("lookup")),
              "tool_calls": field(st.lists(st.fixed_dictionaries({"function": st.fixed_dictionaries(
                  {"name": st.just("lookup"), "arguments": field(st.just({"a": 1}))})}), max_size=1))}))
OLLAMA_SHARED = {
    "stream": field(st.booleans()),
    "format": field(st.sampled_from(["", "json", SCHEMA])),
    "logprobs": field(st.booleans()),
    "top_logprobs": field(st.integers(0, 20)),
    "keep_alive": field(st.sampled_from(["5m", 0])),
    "unknown_field": ANY,
}
OLLAMA_CHAT = st.fixed_dictionaries(
    {"model": st.just("smollm2"), "messages": field(st.lists(OLLAMA_MESSAGE, max_size=3)), "options": OLLAMA_OPTIONS},
    optional={**OLLAMA_SHARED, "tools": field(st.lists(TOOL, max_size=2))})
OLLAMA_GENERATE = st.fixed_dictionaries(
    {"model": st.just("smollm2"), "prompt": field(st.text(max_size=20)), "options": OLLAMA_OPTIONS},
    optional={**OLLAMA_SHARED, "system": field(st.text(max_size=10)), "raw": field(st.booleans()),
              "images": field(st.lists(st.just("aGk="), max_size=1)), "suffix": field(st.text(max_size=3))})

BODIES = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), OPENAI_CHAT),
    st.tuples(st.just("/v1/completions"), OPENAI_COMPLETION),
    st.tuples(st.just("/api/chat"), OLLAMA_CHAT),
    st.tuples(st.just("/api/generate"), OLLAMA_GENERATE),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=BODIES)
def test_no_body_makes_a_server_error(small_http: httpx.Client, request: tuple[str, dict[str, Any]]) -> None:
    path, body = request
    note(f"POST {path} {json.dumps(body)}")
    response = small_http.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert_no_server_error(response)


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document for a server of smollm2, built in-process (no model is loaded), with every
    generation bounded: `max_tokens` (and Ollama's `num_predict`) required and at most 3, `n` at most 2."""

    def no_engine(card: object) -> object:
        raise AssertionError("the document needs no engine")

    registry = ModelRegistry(Catalog.from_dirs(), [SMOLLM2], no_engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FastAPI warns of `GET|HEAD /` sharing an operation id
        document = create_app(Settings(model_ids=(SMOLLM2,)), registry).openapi()
    for path, operation in document["paths"].items():
        body = operation.get("post", {}).get("requestBody", {}).get("content", {}).get("application/json", {})
        properties = body.get("schema", {}).get("properties", {})
        if path.startswith("/v1/") and "max_tokens" in properties:
            properties["max_tokens"] = {"type": "integer", "minimum": 1, "maximum": 3}
            properties.pop("max_completion_tokens", None)
            properties["n"] = {"type": "integer", "minimum": 1, "maximum": 2}
            body["schema"]["required"] = sorted({*body["schema"].get("required", []), "max_tokens"})
        elif "options" in properties:
            options = {"type": "object", "required": ["num_predict"],
                       "properties": {"num_predict": {"type": "integer", "minimum": 1, "maximum": 3}}}
            properties["options"] = options
            body["schema"]["required"] = sorted({*body["schema"].get("required", []), "options"})
    return document


# Bounded: valid and invalid bodies (both generation modes) from the fuzzing and examples phases, 10 a route;
# the coverage phase (every boundary of every field, hundreds a route) and the stateful one are off.
CONFIG = schemathesis.config.SchemathesisConfig.from_dict({
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    "generation": {"max-examples": 10},
})
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_server_error(case: Any, small_server: RunningServer) -> None:
    response = case.call_and_validate(base_url=small_server.base_url, checks=[not_a_server_error])
    if response.status_code == 200:
        assert SERVER_ERROR not in response.text, response.text
