"""The Ollama API on the real server, through the official `ollama` client and raw NDJSON."""

from __future__ import annotations

import json

import httpx
import ollama
import pytest

from tests.e2e.server import RunningServer


@pytest.fixture(scope="module")
def client(server: RunningServer) -> ollama.Client:
    return ollama.Client(host=server.base_url, timeout=120)


def test_version_root_tags_and_ps(client: ollama.Client, http: httpx.Client) -> None:
    assert http.get("/api/version").json()["version"]
    assert http.head("/").status_code == 200
    names = {model.model for model in client.list().models}
    assert names == {"gemma3:270m", "smollm2:135m"}
    gemma = next(model for model in client.list().models if model.model == "gemma3:270m")
    assert gemma.details is not None and gemma.details.family == "gemma3"
    assert (gemma.details.parameter_size, gemma.details.quantization_level) == ("270M", "Q4_K_M")
    assert gemma.size and gemma.size > 100_000_000
    assert {model.model for model in client.ps().models} == names


def test_show_gives_details_capabilities_and_context(client: ollama.Client) -> None:
    shown = client.show("gemma3:270m")
    assert shown.capabilities is not None and "completion" in shown.capabilities and "tools" in shown.capabilities
    assert shown.modelinfo is not None and shown.modelinfo["gemma3.context_length"] == 32768
    assert "vision" not in shown.capabilities


@pytest.mark.parametrize("stream", [False, True])
def test_generate_streamed_or_not_gives_the_same_text(client: ollama.Client, stream: bool) -> None:
    options = {"num_predict": 12, "temperature": 0}
    whole = client.generate(model="gemma3:270m", prompt="roses are red", options=options)
    assert whole.done and whole.done_reason == "length" and whole.eval_count == 12
    assert whole.prompt_eval_count and whole.total_duration and whole.eval_duration
    if stream:
        parts = list(client.generate(model="gemma3:270m", prompt="roses are red", options=options, stream=True))
        assert "".join(part.response for part in parts) == whole.response
        assert parts[-1].done and not any(part.done for part in parts[:-1])


def test_chat_with_stop_option(client: ollama.Client) -> None:
    free = client.chat(model="smollm2:135m", messages=[{"role": "user", "content": "Name three colors."}],
                       options={"temperature": 0, "num_predict": 30})
    text = free.message.content or ""
    assert len(text) > 6
    stop = text[3:6]
    stopped = client.chat(model="smollm2:135m", messages=[{"role": "user", "content": "Name three colors."}],
                          options={"temperature": 0, "num_predict": 30, "stop": [stop]})
    assert stopped.message.content == text[: text.index(stop)] and stopped.done_reason == "stop"
    parts = list(client.chat(model="smollm2:135m", messages=[{"role": "user", "content": "Name three colors."}],
                             options={"temperature": 0, "num_predict": 30}, stream=True))
    assert "".join(part.message.content or "" for part in parts) == text


def test_images_to_a_text_only_model_are_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="gemma3:270m", prompt="caption this image", images=["iVBORw0KGgo="])
    assert caught.value.status_code == 400 and "text only" in caught.value.error


def test_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="llama9:900b", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404 and "not found" in caught.value.error


def test_tools_give_object_arguments(client: ollama.Client) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
    answer = client.chat(model="gemma3:270m", messages=[{"role": "user", "content": "Weather in London?"}],
                         tools=tools, options={"temperature": 0, "num_predict": 200})
    for call in answer.message.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)


def test_ndjson_framing_and_errors(http: httpx.Client) -> None:
    with http.stream("POST", "/api/generate", json={"model": "gemma3:270m", "prompt": "hi", "options": {"num_predict": 3, "temperature": 0}}) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    final = lines[-1]
    for key in ("done_reason", "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                "eval_count", "eval_duration"):
        assert key in final
    assert final["eval_count"] == 3
    loaded = http.post("/api/generate", json={"model": "gemma3:270m"}).json()
    assert loaded["done"] and loaded["done_reason"] == "load"
    bad = http.post("/api/chat", content=b"{nope")
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
    bad_options = http.post("/api/generate", json={"model": "gemma3:270m", "prompt": "x", "options": {"temperature": "hot"}})
    assert bad_options.status_code == 400 and "temperature" in bad_options.json()["error"]
    assert http.get("/health").status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_on_generate_and_chat(client: ollama.Client, stream: bool) -> None:
    options = {"num_predict": 6, "temperature": 0, "repeat_penalty": 1}  # greedy on the model's own distribution
    asked = {"model": "gemma3:270m", "options": options, "logprobs": True, "top_logprobs": 2, "stream": stream}
    for response in (client.generate(prompt="roses are red", **asked),  # type: ignore[call-overload]
                     client.chat(messages=[{"role": "user", "content": "roses are red"}], **asked)):  # type: ignore[call-overload]
        parts = list(response) if stream else [response]
        entries = [entry for part in parts for entry in part.logprobs or []]
        text = "".join(part.response if hasattr(part, "response") else part.message.content for part in parts)
        assert len(entries) == parts[-1].eval_count == 6
        assert "".join(entry.token for entry in entries) == text
        assert all(len(entry.top_logprobs or []) == 2 and entry.top_logprobs[0].token == entry.token for entry in entries)
    plain = client.generate(model="gemma3:270m", prompt="roses are red", options={"num_predict": 2})
    assert plain.logprobs is None


def test_a_chat_longer_than_num_ctx_loses_its_oldest_turns_as_on_ollama(client: ollama.Client) -> None:
    turn = "Tell me about the lighthouse keepers of the northern coast and their long winter nights. " * 3
    history = [{"role": "system", "content": "You are brief."}]
    for _ in range(4):
        history += [{"role": "user", "content": turn}, {"role": "assistant", "content": turn}]
    history.append({"role": "user", "content": "And the ships?"})
    options = {"num_ctx": 256, "num_predict": 400, "temperature": 0}
    answer = client.chat(model="gemma3:270m", messages=history, options=options)
    assert answer.done and answer.prompt_eval_count is not None and answer.eval_count is not None
    assert 0 < answer.prompt_eval_count < 256 and answer.prompt_eval_count + answer.eval_count <= 256
    last_turn_only = client.chat(model="gemma3:270m", messages=[history[0], history[-1]], options=options)
    assert answer.prompt_eval_count > last_turn_only.prompt_eval_count  # the turns that fit stayed
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="gemma3:270m", messages=[{"role": "user", "content": turn * 8}], options=options)
    assert caught.value.status_code == 400 and "context length" in caught.value.error
