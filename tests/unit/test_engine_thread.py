"""The real embedded model in-process: when the engine thread ends unexpectedly, the generations in flight and
waiting fail, a new one fails at once, and the registry and /health say that the model failed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from faisca.api.app import create_app
from faisca.catalog import Catalog
from faisca.config import Settings
from faisca.engine.base import PromptAccepted, TokenOut
from faisca.engine.llama_cpp import LlamaCppEngine
from faisca.errors import EngineError
from faisca.registry import ModelRegistry
from faisca.types import SamplingParams

GEMMA = "google-gemma-3-270m"
# A guard against hanging the suite, far above what any of these takes: never a timing assertion.
_NEVER_S = 120


class _Killed(BaseException):
    """Not an Exception: nothing in the step loop catches it, as a thread dies of a bug or a KeyboardInterrupt."""


def _kill(*_: object) -> bool:
    raise _Killed("killed by the test")


def load(gguf: Path) -> LlamaCppEngine:
    # one sequence at a time: a second generation waits, so both the running and the waiting one are failed
    return LlamaCppEngine.load(gguf, name=GEMMA, max_context_tokens=256, num_threads=2, max_num_seqs=1)


async def _drain(events) -> list[object]:  # noqa: ANN001
    return [event async for event in events]


def test_a_dead_engine_thread_fails_its_requests_and_every_later_one_at_once(gemma_gguf: Path,
                                                                             catalog: Catalog) -> None:
    engine = load(gemma_gguf)
    prompt = engine.encode_prompt("Once upon a time")
    greedy = SamplingParams(temperature=0)

    async def scenario() -> None:
        running = engine.generate(prompt, greedy, max_new_tokens=200)
        assert isinstance(await asyncio.wait_for(anext(running), _NEVER_S), PromptAccepted)
        assert isinstance(await asyncio.wait_for(anext(running), _NEVER_S), TokenOut)
        waiting = asyncio.ensure_future(_drain(engine.generate(prompt, greedy, max_new_tokens=200)))
        engine._step = _kill  # type: ignore[method-assign]  # the thread's next step raises and ends the thread
        with pytest.raises(EngineError, match="ended unexpectedly"):
            await asyncio.wait_for(_drain(running), _NEVER_S)
        with pytest.raises(EngineError, match="ended unexpectedly"):
            await asyncio.wait_for(waiting, _NEVER_S)
        assert not engine.is_alive
        with pytest.raises(EngineError, match="has stopped"):
            await asyncio.wait_for(_drain(engine.generate(prompt, greedy, max_new_tokens=5)), _NEVER_S)

    assert engine.is_alive
    asyncio.run(scenario())

    registry = ModelRegistry(catalog, [GEMMA], lambda card: engine)
    with TestClient(create_app(Settings(), registry), raise_server_exceptions=False) as client:  # closes the engine
        for _ in range(_NEVER_S * 20):
            if not registry.is_loading:
                break
            time.sleep(0.05)
        assert registry.states()[GEMMA].startswith("failed: ")
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "failed" and "has stopped" in health.json()["models"][GEMMA]
        refused = client.post("/v1/chat/completions", json={"model": GEMMA, "max_tokens": 3,
                                                            "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 500 and "has stopped" in refused.json()["error"]["message"]


def test_a_closed_engine_is_not_alive_and_refuses_at_once(gemma_gguf: Path) -> None:
    engine = load(gemma_gguf)
    prompt = engine.encode_prompt("Hello")

    async def scenario() -> None:
        await engine.close()
        assert not engine.is_alive
        with pytest.raises(EngineError, match="shutting down"):
            await asyncio.wait_for(_drain(engine.generate(prompt, SamplingParams(), max_new_tokens=3)), _NEVER_S)

    asyncio.run(scenario())
