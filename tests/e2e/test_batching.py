"""Continuous batching on the real engine: concurrency, fairness, aborts, admission control, prefix reuse,
preemption. Speed targets live in bench/serving.py; here only a modest ratio is asserted."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.server import GEMMA, SMOLLM2, RunningServer, serving

# Gemma 3's end-of-generation tokens (<eos>, <end_of_turn>) banned: every answer runs to max_tokens.
NO_END = {"1": -100, "106": -100}


def prompt(index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long story about a lighthouse keeper, chapter {index}."}]


def async_client(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def running_gauge(http: httpx.Client, model: str = GEMMA) -> float:
    metrics = http.get("/metrics").text
    match = re.search(rf'^faisca_requests_running{{model="{model}"}} (\S+)$', metrics, re.MULTILINE)
    assert match, metrics
    return float(match.group(1))


def test_eight_concurrent_streams_all_finish_with_the_right_reason(server: RunningServer) -> None:
    async def stream(client: openai.AsyncOpenAI, index: int) -> tuple[str, str | None, int]:
        model, max_tokens = (GEMMA, 8 + index) if index % 2 else (SMOLLM2, 200)
        messages = prompt(index) if model == GEMMA else [{"role": "user", "content": "Say hi."}]
        chunks = [chunk async for chunk in await client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}, logit_bias=NO_END if model == GEMMA else None)]
        finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
        usage = chunks[-1].usage
        assert usage is not None
        return model, finish, usage.completion_tokens

    async def run() -> list[tuple[str, str | None, int]]:
        client = async_client(server)
        return await asyncio.gather(*(stream(client, index) for index in range(8)))

    for index, (model, finish, num_tokens) in enumerate(asyncio.run(run())):
        if model == GEMMA:
            assert (finish, num_tokens) == ("length", 8 + index)
        else:
            assert finish == "stop" and 0 < num_tokens < 200


def test_four_concurrent_requests_are_clearly_faster_than_four_in_a_row(server: RunningServer) -> None:
    """A server that runs one request at a time scores at most 1.0 here. The bound is below the issue's example of
    1.5: on a 2-core box ggml's kernels make a 4-sequence decode step cost ~38 ms against ~15 ms for one, so 4-way
    batching tops out near 1.58x (bench/RESULTS.md); 1.25 stays clear of both that ceiling and of no batching."""
    async def one(client: openai.AsyncOpenAI, index: int) -> int:
        completion = await client.chat.completions.create(
            model=GEMMA, messages=prompt(index), max_tokens=48, temperature=0, logit_bias=NO_END)  # type: ignore[arg-type]
        assert completion.usage is not None
        return completion.usage.completion_tokens

    async def in_a_row() -> float:
        client, started_s = async_client(server), time.perf_counter()
        assert [await one(client, index) for index in range(4)] == [48] * 4
        return time.perf_counter() - started_s

    async def together() -> float:
        client, started_s = async_client(server), time.perf_counter()
        assert await asyncio.gather(*(one(client, index) for index in range(4))) == [48] * 4
        return time.perf_counter() - started_s

    asyncio.run(together())  # warm the prompts into the prefix cache for both runs alike
    assert asyncio.run(in_a_row()) / asyncio.run(together()) >= 1.25


def test_batched_greedy_output_equals_alone(fresh_client: openai.OpenAI, fresh_server: RunningServer) -> None:
    """The greedy answer is the same alone and in a batch of 5 (README "Reproducibility")."""
    client, server = fresh_client, fresh_server
    def ask(index: int) -> dict:
        return {"model": GEMMA, "messages": prompt(index), "max_tokens": 8, "temperature": 0, "logit_bias": NO_END}

    alone = client.chat.completions.create(**ask(0)).choices[0].message.content  # type: ignore[arg-type]

    async def batched() -> str | None:
        async_openai = async_client(server)
        results = await asyncio.gather(*(async_openai.chat.completions.create(**ask(index)) for index in range(5)))  # type: ignore[arg-type]
        return results[0].choices[0].message.content

    assert asyncio.run(batched()) == alone


def test_a_shared_prefix_is_reused_and_reported_as_cached(client: openai.OpenAI) -> None:
    system = {"role": "system", "content": "You are the assistant of a lighthouse museum. " * 12}
    first = client.chat.completions.create(model=SMOLLM2, messages=[system, {"role": "user", "content": "Opening hours?"}], max_tokens=2)  # type: ignore[list-item]
    second = client.chat.completions.create(model=SMOLLM2, messages=[system, {"role": "user", "content": "Ticket prices?"}], max_tokens=2)  # type: ignore[list-item]
    assert first.usage is not None and second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    assert first.usage.prompt_tokens * 0.7 < details.cached_tokens < second.usage.prompt_tokens


def test_a_cache_salt_keeps_a_prefix_to_the_requests_of_that_salt(client: openai.OpenAI) -> None:
    system = {"role": "system", "content": "You are the assistant of a lighthouse museum. " * 12}
    messages = [system, {"role": "user", "content": "Opening hours?"}]
    salt_a, salt_b = f"tenant-a-{uuid.uuid4().hex}", f"tenant-b-{uuid.uuid4().hex}"

    def cached_tokens(salt: str) -> int:
        answer = client.chat.completions.create(model=SMOLLM2, messages=messages, max_tokens=1,  # type: ignore[arg-type]
                                                extra_body={"cache_salt": salt})
        assert answer.usage is not None
        details = answer.usage.prompt_tokens_details  # left out when nothing was cached
        return (details.cached_tokens or 0) if details is not None else 0

    assert cached_tokens(salt_a) == 0  # nothing of this salt is cached, though other tests' prompts are
    assert cached_tokens(salt_a) > 50
    assert cached_tokens(salt_b) == 0


@pytest.mark.parametrize(("stream", "num_choices"), [(True, 1), (False, 1), (True, 3)])
def test_a_disconnected_client_frees_its_sequence(server: RunningServer, http: httpx.Client, stream: bool,
                                                  num_choices: int) -> None:
    body = {"model": GEMMA, "messages": prompt(1), "max_tokens": 1500, "logit_bias": NO_END, "stream": stream,
            "n": num_choices}
    with httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(60, read=1.0)) as short_lived:
        if stream:
            with short_lived.stream("POST", "/v1/chat/completions", json=body) as response:
                lines = response.iter_lines()
                while '"content":""' in (line := next(lines)) or not line:  # past the role chunk: generating
                    pass
                started_s = time.monotonic()  # every choice generating (the later ones start from the first's prompt)
                while running_gauge(http) != num_choices and time.monotonic() < started_s + 5:
                    time.sleep(0.05)
                assert running_gauge(http) == num_choices
        else:
            with pytest.raises(httpx.ReadTimeout):
                short_lived.post("/v1/chat/completions", json=body)
    deadline_s = time.monotonic() + 1.5
    while running_gauge(http) != 0 and time.monotonic() < deadline_s:
        time.sleep(0.05)
    assert running_gauge(http) == 0


def test_metrics_are_prometheus_text(http: httpx.Client) -> None:
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    for name in ("faisca_requests_running", "faisca_requests_waiting", "faisca_requests_total",
                 "faisca_time_to_first_token_seconds_bucket", "faisca_time_per_output_token_seconds_bucket",
                 "faisca_prompt_tokens_total", "faisca_generation_tokens_total"):
        assert name in response.text


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serving(tmp_path_factory.mktemp("tight"), "--model", "gemma3:270m", "--max-num-seqs", "1", "--max-queue", "1",
                 "--ctx-size", "1024") as running:
        yield running


def test_beyond_running_plus_queue_requests_get_503_with_retry_after(tight_server: RunningServer) -> None:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tight_server.base_url, timeout=120) as session:
            body = {"model": GEMMA, "messages": prompt(0), "max_tokens": 64, "logit_bias": NO_END}
            return await asyncio.gather(*(session.post("/v1/chat/completions", json=body) for _ in range(6)))

    responses = asyncio.run(run())
    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1 and set(statuses) == {200, 503}
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "overloaded"
    assert httpx.get(f"{tight_server.base_url}/health").status_code == 200


@pytest.fixture(scope="module")
def small_kv_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serving(tmp_path_factory.mktemp("small-kv"), "--model", "gemma3:270m", "--max-num-seqs", "4",
                 "--ctx-size", "512", "--kv-cache-tokens", "512") as running:
        yield running


def test_a_full_kv_cache_preempts_and_everyone_still_finishes(small_kv_server: RunningServer) -> None:
    """Four sequences of ~230 tokens cannot share 512 KV cells: the newest are preempted and recomputed."""
    def ask(index: int) -> dict:
        return {"model": GEMMA, "messages": prompt(index), "max_tokens": 200, "temperature": 0, "logit_bias": NO_END}

    client = openai.OpenAI(base_url=f"{small_kv_server.base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    alone = client.chat.completions.create(**ask(3)).choices[0].message.content  # type: ignore[arg-type]

    async def run() -> list[openai.types.chat.ChatCompletion]:
        async_openai = async_client(small_kv_server)
        return await asyncio.gather(*(async_openai.chat.completions.create(**ask(index)) for index in range(4)))  # type: ignore[arg-type]

    completions = asyncio.run(run())
    assert all(c.choices[0].finish_reason == "length" and c.usage and c.usage.completion_tokens == 200 for c in completions)
    assert "preempted" in small_kv_server.log()
    assert completions[3].choices[0].message.content[:40] == alone[:40]  # type: ignore[index]
