"""`AI.run` as the product pages call it, and `faisca run` as a user runs it, against a live server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from faisca import AI, AsyncClient, Client, FaiscaClientError
from tests.e2e.server import RunningServer

SEED_PAYLOAD = {"stream": True, "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                             {"role": "user", "content": "Name the european capitals"}]}


def test_ai_run_streams_like_the_edge_function_examples(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAISCA_URL", server.base_url)
    chunks = list(AI.run("google-gemma-3-270m", {**SEED_PAYLOAD, "max_tokens": 8, "temperature": 0}))  # type: ignore[arg-type]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    whole = AI.run("google/gemma-3-270m", {"messages": SEED_PAYLOAD["messages"], "max_tokens": 8, "temperature": 0})
    assert isinstance(whole, dict) and whole["model"] == "google-gemma-3-270m"
    assert whole["choices"][0]["message"]["content"]


def test_clients_raise_one_error_type_with_the_status(server: RunningServer) -> None:
    client = Client(server.base_url)
    with pytest.raises(FaiscaClientError) as caught:
        client.run("no-such-model", {"messages": [{"role": "user", "content": "hi"}]})
    assert caught.value.status_code == 404 and "no-such-model" in caught.value.message
    with pytest.raises(FaiscaClientError) as caught:
        list(client.run("gemma3:270m", {"stream": True, "messages": []}))  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    with pytest.raises(FaiscaClientError) as caught:
        Client("http://127.0.0.1:1").run("gemma3:270m", {"messages": [{"role": "user", "content": "hi"}]})
    assert caught.value.status_code is None


def test_the_async_twin(server: RunningServer) -> None:
    async def run() -> tuple[dict, list[dict]]:
        client = AsyncClient(server.base_url)
        whole = await client.run("gemma3:270m", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0})
        chunks = [chunk async for chunk in await client.run("gemma3:270m", {**SEED_PAYLOAD, "max_tokens": 3, "temperature": 0})]  # type: ignore[union-attr]
        return whole, chunks  # type: ignore[return-value]

    whole, chunks = asyncio.run(run())
    assert whole["usage"]["completion_tokens"] == 3 and chunks[-1]["choices"][0]["finish_reason"] == "length"


def faisca(*args: str, stdin: str | None = None, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"FAISCA_URL": url} if url else {})}
    return subprocess.run([sys.executable, "-m", "faisca.cli.main", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, env=env)


def test_faisca_run_answers_one_prompt(server: RunningServer) -> None:
    result = faisca("run", "smollm2", "Say hi.", "--max-tokens", "20", url=server.base_url)
    assert result.returncode == 0 and result.stdout.strip() and result.stderr == ""


def test_faisca_run_chats_interactively(server: RunningServer) -> None:
    result = faisca("run", "smollm2", "--url", server.base_url, "--max-tokens", "10", stdin="Hello\nAnd again\n/bye\n")
    assert result.returncode == 0 and result.stdout.count(">>> ") == 3


def test_faisca_run_says_one_line_when_things_go_wrong(server: RunningServer) -> None:
    down = faisca("run", "smollm2", "hi", url="http://127.0.0.1:1")
    assert down.returncode == 1 and down.stderr.startswith("faisca: cannot reach") and "Traceback" not in down.stderr
    unknown = faisca("run", "no-such-model", "hi", url=server.base_url)
    assert unknown.returncode == 1 and "no-such-model" in unknown.stderr and "Traceback" not in unknown.stderr
