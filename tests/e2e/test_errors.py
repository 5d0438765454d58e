"""Bad input gets a clear 4xx in OpenAI's error shape, never a 500, and the server keeps serving."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.e2e.server import CONTEXT_TOKENS, GEMMA, RunningServer

USER = [{"role": "user", "content": "hi"}]
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/image.jpg"}}


def assert_error(response: httpx.Response, status: int, *, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": GEMMA, "messages": []}, "messages"),
        ({"model": GEMMA}, "messages"),
        ({"model": GEMMA, "messages": "hi"}, "messages"),
        ({"model": GEMMA, "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"model": GEMMA, "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"model": GEMMA, "messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]}, "messages.0.content.0.type"),
        ({"model": GEMMA, "messages": USER, "temperature": 2.5}, "temperature"),
        ({"model": GEMMA, "messages": USER, "temperature": "hot"}, "temperature"),
        ({"model": GEMMA, "messages": USER, "top_p": 1.5}, "top_p"),
        ({"model": GEMMA, "messages": USER, "n": 0}, "n"),
        ({"model": GEMMA, "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": GEMMA, "messages": USER, "presence_penalty": 3}, "presence_penalty"),
        ({"model": GEMMA, "messages": USER, "stream": "yes"}, "stream"),
        ({"model": GEMMA, "messages": USER, "stop": 5}, "stop"),
        ({"model": GEMMA, "messages": USER, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"model": GEMMA, "messages": USER, "top_logprobs": 2}, "top_logprobs"),
        ({"model": GEMMA, "messages": USER, "logprobs": "yes"}, "logprobs"),
        ({"model": GEMMA, "messages": USER, "prompt_logprobs": 1}, "prompt_logprobs"),
        ({"model": GEMMA, "messages": USER, "min_tokens": 5, "max_tokens": 4}, "min_tokens"),
        ({"model": GEMMA, "messages": USER, "stop_token_ids": [-1]}, "stop_token_ids.0"),
        ({"model": GEMMA, "messages": USER, "stop_token_ids": [262_144]}, "stop_token_ids"),
        ({"model": GEMMA, "messages": USER, "ignore_eos": "yes"}, "ignore_eos"),
        ({"model": 7, "messages": USER}, "model"),
        ({"messages": USER}, "model"),
    ],
)
def test_invalid_requests_are_400_naming_the_field(http: httpx.Client, body: dict, param: str) -> None:
    assert_error(http.post("/v1/chat/completions", json=body), 400, param=param)


def test_malformed_json_is_400(http: httpx.Client) -> None:
    assert_error(http.post("/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}), 400)


def test_invalid_utf8_is_400(http: httpx.Client) -> None:
    body = b'{"model": "gemma3:270m", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
    error = assert_error(http.post("/v1/chat/completions", content=body), 400)
    assert "UTF-8" in error["message"]


def test_non_object_body_is_400(http: httpx.Client) -> None:
    assert_error(http.post("/v1/chat/completions", json=[1, 2]), 400)


def test_unknown_model_is_404(client: openai.OpenAI, http: httpx.Client) -> None:
    error = assert_error(http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": USER}), 404, param="model", code="model_not_found")
    assert "no-such-model" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=USER)  # type: ignore[arg-type]


def test_seed_model_without_weights_says_how_to_provide_them(http: httpx.Client) -> None:
    body = {"model": "ISTA-DASLab/gemma-3-27b-it-GPTQ-4b-128g", "messages": USER}
    error = assert_error(http.post("/v1/chat/completions", json=body), 404, param="model", code="model_not_available")
    assert "--weights" in error["message"]


def test_image_to_text_only_model_is_400(client: openai.OpenAI, http: httpx.Client) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this image?"}, IMAGE]}]
    error = assert_error(http.post("/v1/chat/completions", json={"model": GEMMA, "messages": messages}), 400,
                         param="messages.0.content.1.image_url", code="unsupported_capability")
    assert "text only" in error["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=GEMMA, messages=messages)  # type: ignore[arg-type]


def test_prompt_plus_max_tokens_beyond_the_context_is_400(client: openai.OpenAI, http: httpx.Client) -> None:
    body = {"model": GEMMA, "messages": USER, "max_tokens": CONTEXT_TOKENS}
    assert_error(http.post("/v1/chat/completions", json=body), 400, param="max_tokens", code="context_length_exceeded")
    long_prompt = [{"role": "user", "content": "word " * (CONTEXT_TOKENS + 100)}]
    assert_error(http.post("/v1/chat/completions", json={"model": GEMMA, "messages": long_prompt}), 400,
                 param="messages", code="context_length_exceeded")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=GEMMA, messages=USER, max_tokens=CONTEXT_TOKENS * 4)  # type: ignore[arg-type]


def test_gemma_template_rejects_non_alternating_roles_as_400(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    error = assert_error(http.post("/v1/chat/completions", json={"model": GEMMA, "messages": messages}), 400, param="messages")
    assert "alternate" in error["message"]


def test_oversized_body_is_413(http: httpx.Client) -> None:
    big = b"{" + b" " * (33 * 1024 * 1024) + b"}"
    assert_error(http.post("/v1/chat/completions", content=big), 413)


def test_unknown_route_and_method_are_shaped(http: httpx.Client) -> None:
    assert_error(http.get("/v1/no-such-route"), 404)
    assert_error(http.delete("/v1/models"), 405)


def test_client_disconnect_aborts_the_generation(server: RunningServer, http: httpx.Client) -> None:
    """One context serves one generation at a time: if an abandoned 2,000-token answer kept generating
    (tens of seconds here), the next request would wait behind it."""
    # <eos> and <end_of_turn> banned: the answer cannot end early on its own (it once did, in under 1 s)
    long = {"model": GEMMA, "messages": USER, "max_tokens": 2000, "temperature": 1.0,
            "logit_bias": {"1": -100, "106": -100}, "stream": True}
    with httpx.Client(base_url=server.base_url, timeout=60) as streaming:
        with streaming.stream("POST", "/v1/chat/completions", json=long) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/chat/completions", json={**long, "stream": False}, timeout=1.0)
    started_s = time.monotonic()
    response = http.post("/v1/chat/completions", json={"model": GEMMA, "messages": USER, "max_tokens": 2})
    assert response.status_code == 200
    assert time.monotonic() - started_s < 15


def test_server_is_healthy_after_all_of_it(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200
