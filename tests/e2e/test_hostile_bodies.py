"""Hostile bodies on both surfaces, raw over httpx: each is a 4xx in its surface's error shape naming the field,
and the server goes on answering."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.server import GEMMA, SMOLLM2

USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def deep_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def raw(text: str) -> bytes:
    return text.encode()


def nested(levels: int) -> bytes:
    return b'{"model": "smollm2", "x": ' + b"[" * levels + b"]" * levels + b"}"


CHAT = f'"model": "{GEMMA}", "messages": [{{"role": "user", "content": "hi"}}]'
OLLAMA_CHAT = '"model": "gemma3:270m", "messages": [{"role": "user", "content": "hi"}]'

# (path, body: a JSON value or raw bytes, the field the error names; None: the body as a whole)
HOSTILE: list[tuple[str, Any, str | None]] = [
    # numbers JSON does not have, or that overflow
    ("/v1/chat/completions", raw(f'{{{CHAT}, "temperature": NaN}}'), "temperature"),
    ("/v1/chat/completions", raw(f'{{{CHAT}, "top_p": Infinity}}'), "top_p"),
    ("/v1/chat/completions", raw(f'{{{CHAT}, "presence_penalty": -Infinity}}'), "presence_penalty"),
    ("/v1/chat/completions", raw(f'{{{CHAT}, "temperature": 1e400}}'), "temperature"),
    ("/v1/chat/completions", raw(f'{{{CHAT}, "temperature": 0, "logit_bias": {{"10": NaN}}, '
                                 f'"response_format": {{"type": "json_object"}}}}'), "logit_bias.10"),
    ("/v1/completions", raw(f'{{"model": "{GEMMA}", "prompt": "hi", "temperature": NaN}}'), "temperature"),
    ("/api/chat", raw(f'{{{OLLAMA_CHAT}, "options": {{"top_k": Infinity}}}}'), "options.top_k"),
    ("/api/chat", raw(f'{{{OLLAMA_CHAT}, "options": {{"temperature": NaN}}}}'), "options.temperature"),
    ("/api/generate", raw('{"model": "gemma3:270m", "prompt": "hi", "options": {"temperature": -1e999}}'),
     "options.temperature"),
    # nesting and numbers past what the parser holds
    ("/v1/chat/completions", nested(100_000), None),
    ("/v1/chat/completions", nested(100), "x"),
    ("/api/chat", nested(100_000), None),
    ("/api/generate", nested(100), "x"),
    ("/v1/chat/completions", raw(f'{{{CHAT}, "seed": {"9" * 5000}}}'), None),
    ("/api/generate", raw('{"model": "gemma3:270m", "prompt": "hi", "options": {"seed": ' + "9" * 5000 + "}}"), None),
    ("/v1/chat/completions", raw(f'{{{CHAT[:-3]}\\ud800"}}]}}'), "messages.0.content"),
    ("/api/chat", raw(f'{{{OLLAMA_CHAT[:-3]}\\udfff"}}]}}'), "messages.0.content"),
    # integers in range for JSON, out of range for what they reach
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "max_tokens": 10**30}, "max_tokens"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "seed": 10**30}, "seed"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "top_k": 10**30}, "top_k"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "stop_token_ids": [10**30]}, "stop_token_ids.0"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "logit_bias": {"1" * 30: 1}}, "logit_bias"),
    ("/v1/completions", {"model": GEMMA, "prompt": "hi", "max_tokens": 10**30}, "max_tokens"),
    ("/api/generate", {"model": "gemma3:270m", "prompt": "hi", "options": {"num_predict": 10**30}}, "options.num_predict"),
    ("/api/chat", {"model": "gemma3:270m", "messages": USER, "options": {"seed": 10**30}}, "options.seed"),
    ("/api/chat", {"model": "gemma3:270m", "messages": USER, "options": {"top_k": 10**30}}, "options.top_k"),
    # malformed Ollama fields
    ("/api/chat", {"model": "gemma3:270m", "messages": USER, "tools": [1]}, "tools.0"),
    ("/api/chat", {"model": "gemma3:270m", "messages": USER, "options": {"stop": 5}}, "options.stop"),
    ("/api/chat", {"model": "gemma3:270m", "messages": [{"role": "assistant", "content": "", "tool_calls": [1]}]},
     "messages.0.tool_calls.0"),
    ("/api/generate", {"model": "gemma3:270m", "prompt": "hi", "options": {"num_predict": "lots"}},
     "options.num_predict"),
    ("/api/generate", {"model": "gemma3:270m", "prompt": "hi", "options": "fast"}, "options"),
    ("/api/generate", {"model": "gemma3:270m", "prompt": ["hi"]}, "prompt"),
    ("/api/chat", {"model": "gemma3:270m", "messages": [1]}, "messages.0"),
    # an empty raw prompt, for a model without a BOS token: no token to continue from
    ("/v1/completions", {"model": SMOLLM2, "prompt": "", "max_tokens": 2}, "prompt"),
    ("/api/generate", {"model": "smollm2", "prompt": "", "raw": True, "options": {"num_predict": 2}}, "prompt"),
    # limits
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "stop": ["x"] * 5000}, "stop"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "stop": "x" * 100_000}, "stop"),
    ("/api/chat", {"model": "gemma3:270m", "messages": USER, "options": {"stop": ["x"] * 5000}}, "options.stop"),
    ("/api/chat", {"model": "gemma3:270m", "messages": USER, "options": {"stop": ["x" * 100_000]}}, "options.stop.0"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "stop_token_ids": [1] * 100_000}, "stop_token_ids"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "logit_bias": {str(t): 1 for t in range(5000)}},
     "logit_bias"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "tools": [TOOL] * 1000}, "tools"),
    ("/api/chat", {"model": "gemma3:270m", "messages": USER, "tools": [TOOL] * 1000}, "tools"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER * 20_000}, "messages"),
    ("/api/chat", {"model": "gemma3:270m", "messages": USER * 20_000, "options": {"num_ctx": 64}}, "messages"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": deep_schema(17)}}},
     "response_format.json_schema.schema"),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": deep_schema(17)}}]}, "tools.0.function.parameters"),
    ("/api/generate", {"model": "gemma3:270m", "prompt": "hi", "format": deep_schema(17)}, "format"),
    ("/api/chat", {"model": "gemma3:270m", "messages": USER, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": deep_schema(17)}}]}, "tools.0.function.parameters"),
]


def post(http: httpx.Client, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(path, content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize(("path", "body", "param"), HOSTILE, ids=[f"{i}-{case[0]}" for i, case in enumerate(HOSTILE)])
def test_hostile_body_is_a_4xx_in_the_surfaces_shape(http: httpx.Client, path: str, body: Any,
                                                     param: str | None) -> None:
    response = post(http, path, body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    if path.startswith("/api/"):
        assert isinstance(error, str) and error
        assert param is None or error.startswith(f"{param}: "), error
    else:
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert error["param"] == param, error
    assert len(response.content) < 1000  # the hostile value is not echoed back


def test_the_server_still_answers_after_the_hostile_bodies(http: httpx.Client) -> None:
    for path, body, _ in HOSTILE:
        assert post(http, path, body).status_code < 500
    assert http.get("/health").status_code == 200
    answer = http.post("/v1/chat/completions", json={"model": SMOLLM2, "messages": USER, "max_tokens": 3})
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] > 0
    ollama = http.post("/api/generate", json={"model": "smollm2", "prompt": "hi", "stream": False,
                                               "options": {"num_predict": 3}})
    assert ollama.status_code == 200 and ollama.json()["done"]


def test_unknown_fields_and_options_stay_accepted(http: httpx.Client) -> None:
    body = {"model": "smollm2", "prompt": "hi", "stream": False, "session_id": "open-webui", "keep_alive": "5m",
            "options": {"num_predict": 2, "num_thread": 2, "mirostat": 0, "use_mmap": True}}
    response = http.post("/api/generate", json=body)
    assert response.status_code == 200 and response.json()["eval_count"] <= 2


@pytest.mark.parametrize("kind", ["chat", "generate"])
def test_ollama_schemas_are_published(http: httpx.Client, kind: str) -> None:
    import jsonschema

    schema = http.get(f"/api/schema/{kind}", params={"model": "gemma3:270m"}).json()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert "options" in schema["properties"]
    assert http.get(f"/api/schema/{kind}", params={"model": "llama9:900b"}).status_code == 404
    assert http.get(f"/api/schema/{kind}").status_code in (400, 422)
