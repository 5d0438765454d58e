"""A faisca front (`faisca serve --upstream ID=URL`) over real OpenAI-compatible servers: `faisca serve` replicas of
the embedded Gemma 3 270M (one serving images), and llama-cpp-python's own server.

Through the front with the official clients (openai, ollama, `faisca.client`, `faisca run`); tools (ReAct) and images
done in front; a replica killed in the middle of streams and brought back; conversation affinity (a second turn hits
the replica's cache); spread over replicas; no replica up (503). Answers are never compared across requests (they may
differ with cache state): statuses, shapes and counts are.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from faisca import AI
from faisca.catalog import Catalog
from faisca.engine.weights import resolve_gguf
from tests.e2e.server import FAISCA_SERVE, GEMMA, RunningServer, free_port, serving, serving_all, vision_args
from tests.pictures import png
from tests.projector import TOKENS_PER_IMAGE

pytestmark = pytest.mark.e2e

REPLICA = ("--model", "gemma3:270m", "--threads", "1", "--ctx-size", "2048")
VISION_NAME = "gemma3-vision"  # what the vision replica serves it as (`--name`)
VISION = "faisca-tests-gemma3-vision"  # its card's id at the front
SHORT = {"max_tokens": 4, "temperature": 0}
LONG = "Write a long story about the sea."  # where a count of tokens is asserted: no answer ends that soon

VISION_CARD = """\
name = "Gemma 3 vision (tests)"
version = "270M Q4_K_M"
category = "LLM"
size = "270M parameters"
hf_id = "faisca-tests/gemma3-vision"
license = "Gemma"
tool_calling = false
long_term_support = false
context_length = 2048
lora = false
input = "text+image"
tool_format = "react"
description = "The embedded Gemma 3 270M with a tiny random projector, served by another faisca."

[runtime]
engine = "upstream"
urls = ["{url}"]
served_name = "{served_name}"
chat_template = "gemma3"
"""

# llama-cpp-python's server as shipped, started through a launcher: on this machine (a Xeon with AMX) llama.cpp's
# extra weight buffers crash the first decode, and faisca loads without them; so does the server here
# (`use_extra_bufts = False` in llama.cpp's default model params). The server itself is unchanged.
LLAMA_CPP_SERVER = (sys.executable, "-c", """
import runpy, llama_cpp.llama_cpp as raw
default = raw.llama_model_default_params
def params():
    p = default(); p.use_extra_bufts = False; return p
raw.llama_model_default_params = params
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
""")


def upstream_url(replica: RunningServer) -> str:
    """The replica's URL as the front is given it (and labels its metrics with)."""
    return f"{replica.base_url}/v1"


def upstreams(model: str, replicas: list[RunningServer]) -> list[str]:
    return [arg for replica in replicas for arg in ("--upstream", f"{model}={upstream_url(replica)}")]


def upstream_metric(front: RunningServer, name: str) -> dict[str, float]:
    """One of the front's per-replica series: replica URL → value."""
    text = httpx.get(f"{front.base_url}/metrics", timeout=10).text
    return {sample.labels["replica"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name}


def wait_until(condition: object, timeout_s: float, what: str) -> float:
    """Poll `condition()` until true; the seconds it took."""
    started_s = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started_s > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        time.sleep(0.2)
    return time.monotonic() - started_s


def openai_client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def user(text: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": text}]


def chat(client: openai.OpenAI, messages: list[dict[str, object]], *, model: str = "gemma3:270m",
         **options: object) -> Any:
    """`client.chat.completions.create`, its many overloads aside."""
    return client.chat.completions.create(model=model, messages=messages, **options)  # type: ignore[call-overload]


@dataclass
class Fleet:
    front: RunningServer
    replicas: list[RunningServer]  # of gemma3:270m
    vision: RunningServer


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("fleet")
    vision_replica = (*vision_args(directory, VISION_NAME), "--threads", "1", "--ctx-size", "2048")
    with serving_all(directory, REPLICA, REPLICA, REPLICA, vision_replica) as (*replicas, vision):
        cards = directory / "cards"
        cards.mkdir()
        (cards / "gemma3-vision.toml").write_text(VISION_CARD.format(url=upstream_url(vision), served_name=VISION_NAME))
        front = RunningServer(*upstreams("gemma3:270m", replicas), "--model", VISION, log_path=directory / "front.log",
                              program=(*FAISCA_SERVE[:-1], "--cards-dir", str(cards), "serve"))
        try:
            front.wait_ready()
            wait_until(lambda: sum(upstream_metric(front, "faisca_upstream_up").values()) == 4, 30, "4 replicas up")
            yield Fleet(front, replicas, vision)
        finally:
            front.stop()


@pytest.fixture(scope="module")
def client(fleet: Fleet) -> openai.OpenAI:
    return openai_client(fleet.front)


# --- the official clients through the front

def test_openai_chat_with_choices_stop_and_logprobs(client: openai.OpenAI) -> None:
    answer = chat(client, user("Count: one, two,"), n=2, max_tokens=8, temperature=0.8, stop=["\n"], logprobs=True,
                  top_logprobs=2)
    assert answer.id.startswith("chatcmpl-") and answer.object == "chat.completion" and answer.model == GEMMA
    assert [choice.index for choice in answer.choices] == [0, 1]
    for choice in answer.choices:
        assert choice.finish_reason in ("stop", "length") and "stop_reason" in (choice.model_extra or {})
        assert "\n" not in (choice.message.content or "")
        assert choice.logprobs and choice.logprobs.content
        assert all(len(entry.top_logprobs) == 2 for entry in choice.logprobs.content)
    assert answer.usage and answer.usage.prompt_tokens > 0 and 2 <= answer.usage.completion_tokens <= 16


def test_openai_chat_streamed_with_two_choices_and_usage(client: openai.OpenAI) -> None:
    chunks = list(chat(client, user("Name three colours."), n=2, max_tokens=6, temperature=0.8, stream=True,
                       stream_options={"include_usage": True}))
    assert {chunk.id for chunk in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    finished = {choice.index: choice.finish_reason for chunk in chunks for choice in chunk.choices
                if choice.finish_reason}
    assert set(finished) == {0, 1}
    usage = chunks[-1].usage
    assert usage and usage.prompt_tokens > 0 and 2 <= usage.completion_tokens <= 12


def test_openai_completions(client: openai.OpenAI) -> None:
    answer = client.completions.create(model="gemma3:270m", prompt="Once upon a time, in a land far away,",
                                       max_tokens=5, temperature=0, logprobs=2)
    assert answer.id.startswith("cmpl-") and answer.choices[0].text
    assert answer.usage and answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens == 5
    assert answer.choices[0].logprobs and len(answer.choices[0].logprobs.tokens or []) == 5
    chunks = list(client.completions.create(model="gemma3:270m", prompt="Once upon a time", max_tokens=5,
                                            temperature=0, stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"


def test_the_ollama_client(fleet: Fleet) -> None:
    client = ollama.Client(host=fleet.front.base_url, timeout=120)
    assert "gemma3:270m" in {model.model for model in client.list().models}
    assert "gemma3:270m" in {model.model for model in client.ps().models}
    answer = client.chat(model="gemma3:270m", messages=user(LONG), options={"num_predict": 4, "temperature": 0})
    assert answer.message.role == "assistant" and answer.message.content and answer.done
    assert answer.eval_count == 4 and answer.prompt_eval_count
    parts = list(client.chat(model="gemma3:270m", messages=user(LONG), stream=True,
                             options={"num_predict": 4, "temperature": 0}))
    assert parts[-1].done and parts[-1].eval_count == 4 and "".join(part.message.content or "" for part in parts)
    generated = client.generate(model="gemma3:270m", prompt=LONG,
                                options={"num_predict": 4, "temperature": 0})
    assert generated.response and generated.done and generated.eval_count == 4


def test_ai_run_and_faisca_run(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAISCA_URL", fleet.front.base_url)
    whole = AI.run("gemma3:270m", {"messages": user(LONG), **SHORT})
    assert isinstance(whole, dict) and whole["model"] == GEMMA and whole["usage"]["completion_tokens"] == 4
    chunks = list(AI.run("gemma3:270m", {"messages": user(LONG), "stream": True, **SHORT}))  # type: ignore[arg-type]
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[-1]["choices"][0]["finish_reason"] == "length"
    result = subprocess.run([sys.executable, "-m", "faisca.cli.main", "run", "gemma3:270m", LONG,
                             "--max-tokens", "4", "--url", fleet.front.base_url],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


# --- done in front: tools (ReAct) and images

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_a_required_tool_call_through_the_front(client: openai.OpenAI) -> None:
    # The front's ReAct grammar reaches faisca replicas as `structured_outputs.grammar` (vLLM's field).
    answer = chat(client, user("What is the weather in Lisbon?"), tools=[WEATHER], tool_choice="required",
                  max_tokens=60, temperature=0)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "get_weather"
    assert isinstance(json.loads(choice.message.tool_calls[0].function.arguments), dict)


def image_message(url: str | None) -> list[dict[str, object]]:
    parts: list[dict[str, object]] = [{"type": "text", "text": "What is in this picture?"}]
    if url is not None:
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return [{"role": "user", "content": parts}]


def test_an_image_through_the_front(client: openai.OpenAI) -> None:
    red = f"data:image/png;base64,{base64.b64encode(png((220, 20, 20))).decode()}"
    text_only = chat(client, image_message(None), model=VISION, **SHORT)
    with_image = chat(client, image_message(red), model=VISION, **SHORT)
    assert text_only.usage and with_image.usage and with_image.model == VISION
    # Gemma 3 wraps an image's tokens in <start_of_image> … <end_of_image>
    assert with_image.usage.prompt_tokens == text_only.usage.prompt_tokens + TOKENS_PER_IMAGE + 2


def test_an_image_url_on_loopback_is_refused_in_front(fleet: Fleet, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, image_message(f"{fleet.vision.base_url}/health"), model=VISION, **SHORT)
    assert caught.value.status_code == 400


# --- routing

def replica_taking(fleet: Fleet, send: Callable[[], object]) -> str:
    """The replica that took the one request `send()` sent (from the front's metrics)."""
    before = upstream_metric(fleet.front, "faisca_upstream_requests_total")
    send()
    after = upstream_metric(fleet.front, "faisca_upstream_requests_total")
    [replica] = [url for url, count in after.items() if count > before.get(url, 0)]
    return replica


def test_a_conversation_stays_where_its_prefix_is_cached(fleet: Fleet, client: openai.OpenAI) -> None:
    # Conversations with nothing in common but the template's first tokens, one after the other (no load): each has
    # its own replica, so they spread, and each second turn goes back to the first turn's replica and its cache.
    taken_by = []
    for topic in ("red planet", "largest ocean", "tallest mountain", "longest river", "smallest bird",
                  "hottest desert", "deepest lake", "fastest cat"):
        messages: list[dict[str, object]] = [
            {"role": "user", "content": f"In one sentence, about the {topic}: where is it?"}]
        answers = []

        def send() -> None:
            answers.append(chat(client, messages, **SHORT))

        first_replica = replica_taking(fleet, send)
        messages += [{"role": "assistant", "content": answers[0].choices[0].message.content or ""},
                     {"role": "user", "content": "And how old is it?"}]
        assert replica_taking(fleet, send) == first_replica
        first, second = (answer.usage for answer in answers)
        assert first and second and second.prompt_tokens_details
        assert (second.prompt_tokens_details.cached_tokens or 0) >= first.prompt_tokens
        taken_by.append(first_replica)
    assert len(set(taken_by)) > 1, taken_by


def test_concurrent_requests_spread_over_the_replicas(fleet: Fleet) -> None:
    before = upstream_metric(fleet.front, "faisca_upstream_requests_total")

    async def send_all() -> None:
        client = openai.AsyncOpenAI(base_url=f"{fleet.front.base_url}/v1", api_key="unused", max_retries=0,
                                    timeout=120)
        async with client:
            await asyncio.gather(*(client.chat.completions.create(  # type: ignore[call-overload]
                model="gemma3:270m", messages=user(f"Request {index}: an animal whose name starts with {letter}?"),
                **SHORT) for index, letter in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZABCD")))

    asyncio.run(send_all())
    after = upstream_metric(fleet.front, "faisca_upstream_requests_total")
    counts = [after[url] - before.get(url, 0) for url in map(upstream_url, fleet.replicas)]
    assert sum(counts) == 30 and max(counts) <= 15, counts


# --- replicas failing

def no_replica_answers(front: RunningServer) -> httpx.Response:
    """The front's /health, once it answers at all (its own readiness waits on none of the replicas here)."""
    responses: list[httpx.Response] = []

    def answered() -> bool:
        try:
            responses.append(httpx.get(f"{front.base_url}/health", timeout=2))
        except httpx.TransportError:
            return False
        return True

    wait_until(answered, 60, "the front answering")
    return responses[-1]


def test_with_no_replica_up_the_front_answers_503(fleet: Fleet, tmp_path: Path) -> None:
    # gemma3:270m where nothing listens; the Mistral seed card on a faisca that lists it (its catalog has it) but
    # cannot serve it (no weights there)
    bystander = upstream_url(fleet.replicas[0])
    front = RunningServer("--upstream", f"gemma3:270m=http://127.0.0.1:{free_port()}/v1",
                          "--upstream", f"mistral-small:24b={bystander}", log_path=tmp_path / "front.log")
    try:
        assert no_replica_answers(front).status_code == 503
        for model in ("gemma3:270m", "mistral-small:24b"):
            response = httpx.post(f"{front.base_url}/v1/chat/completions", timeout=30,
                                  json={"model": model, "messages": user("hi"), **SHORT})
            assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0, response.text
            error = response.json()["error"]
            assert error["message"] and error["type"]
        assert upstream_metric(front, "faisca_upstream_up")[bystander] == 0
    finally:
        front.stop()


STREAM_PROMPTS = ["Tell a long story about a lighthouse keeper.", "Describe a day at a busy harbour.",
                  "Write a letter to a friend about a journey.", "Explain how bread is made, step by step.",
                  "Tell a fable about a fox and a crow.", "Describe the seasons in a mountain village."]


def raw_stream(base_url: str, prompt: str, begun: threading.Event) -> list[object]:
    """A chat stream read as raw SSE: its chunks (dicts) and `[DONE]`."""
    events: list[object] = []
    body = {"model": "gemma3:270m", "messages": user(prompt), "stream": True, "max_tokens": 150,
            "temperature": 0.8, "ignore_eos": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
                if isinstance(events[-1], dict) and any(choice["delta"].get("content")
                                                        for choice in events[-1].get("choices", ())):
                    begun.set()
    return events


def test_a_replica_killed_mid_stream_then_back(tmp_path: Path) -> None:
    with serving_all(tmp_path, REPLICA, REPLICA) as replicas, \
            serving(tmp_path, *upstreams("gemma3:270m", replicas)) as front:
        victim, victim_url = replicas[0], upstream_url(replicas[0])
        begun = [threading.Event() for _ in STREAM_PROMPTS]
        with ThreadPoolExecutor(len(STREAM_PROMPTS)) as pool:
            streams = [pool.submit(raw_stream, front.base_url, prompt, event)
                       for prompt, event in zip(STREAM_PROMPTS, begun, strict=True)]
            assert all(event.wait(60) for event in begun)
            num_on_victim = upstream_metric(front, "faisca_upstream_requests_running")[victim_url]
            victim.process.kill()
            victim.process.wait()
            answers = [stream.result(timeout=90) for stream in streams]

        assert num_on_victim >= 1
        broken = []
        for events in answers:
            assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
            chunks = [event for event in events[:-1] if isinstance(event, dict)]
            errors = [chunk for chunk in chunks if "error" in chunk]
            finishes = [choice["finish_reason"] for chunk in chunks for choice in chunk.get("choices", ())
                        if choice.get("finish_reason")]
            assert len({chunk["id"] for chunk in chunks if "id" in chunk}) == 1  # one answer, never a second
            if errors:
                broken.append(events)
                assert len(errors) == 1 and chunks[-1] is errors[0] and not finishes
                assert errors[0]["error"]["message"]
            else:
                assert finishes == ["length"] and chunks[-1]["usage"]["completion_tokens"] == 150
        assert 1 <= len(broken) <= num_on_victim
        assert upstream_metric(front, "faisca_upstream_up")[victim_url] == 0
        assert upstream_metric(front, "faisca_upstream_errors_total")[victim_url] >= len(broken)

        client = openai_client(front)
        for index in range(6):
            assert chat(client, user(f"After the fall, {index}."), **SHORT).choices[0].message.content is not None

        revived = RunningServer(*REPLICA, log_path=tmp_path / "revived.log", port=victim.port)
        try:
            revived.wait_ready()
            wait_until(lambda: upstream_metric(front, "faisca_upstream_up")[victim_url] == 1, 15,
                       "the revived replica up at the front")
            served_before = upstream_metric(front, "faisca_upstream_requests_total")[victim_url]
            for index in range(20):
                chat(client, user(f"Back again, {index}?"), **SHORT)
                if upstream_metric(front, "faisca_upstream_requests_total")[victim_url] > served_before:
                    break
            else:
                pytest.fail("20 distinct conversations and none reached the revived replica")
        finally:
            revived.stop()


# --- a third-party upstream: llama-cpp-python's server

@pytest.fixture(scope="module")
def llama_cpp_front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("llama-cpp-server")
    gguf = resolve_gguf(Catalog.from_dirs().resolve("smollm2"))
    upstream = RunningServer("--model", str(gguf), "--model_alias", "smollm2", "--n_ctx", "2048",
                             "--interrupt_requests", "False", log_path=directory / "llama-cpp-server.log",
                             program=LLAMA_CPP_SERVER, ready_path="/v1/models")  # it has no /health
    try:
        upstream.wait_ready()
        with serving(directory, "--upstream", f"smollm2={upstream_url(upstream)}") as front:
            yield front
    finally:
        upstream.stop()


def test_llama_cpp_python_server_through_the_front(llama_cpp_front: RunningServer) -> None:
    client = openai_client(llama_cpp_front)
    answer = chat(client, user(LONG), model="smollm2", **SHORT)
    assert answer.id.startswith("chatcmpl-") and answer.choices[0].message.content
    # it sends no usage in a stream (it ignores `stream_options`): the front counts the completion tokens itself
    # (the prompt's it cannot, without the model's tokenizer)
    assert answer.usage and answer.usage.completion_tokens == 4
    chunks = list(chat(client, user(LONG), model="smollm2", stream=True, stream_options={"include_usage": True},
                       **SHORT))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens == 4
    answer = ollama.Client(host=llama_cpp_front.base_url, timeout=120).chat(
        model="smollm2", messages=user(LONG), options={"num_predict": 4, "temperature": 0})
    assert answer.message.content and answer.done and answer.eval_count == 4
