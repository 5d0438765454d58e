"""/health on the real server tells the truth: a served model that failed to load makes it 503, naming the model
and why, while the other models go on serving."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server import GEMMA, SMOLLM2, RunningServer


def wait_loaded(running: RunningServer, timeout_s: float = 180) -> httpx.Response:
    """The first /health answer after loading (ready or failed), whatever its status."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert running.process.poll() is None, running.log()
        try:
            health = httpx.get(f"{running.base_url}/health", timeout=2)
            if "status" in health.json():
                return health
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(running.log())


def test_a_model_that_failed_to_load_makes_health_503_naming_it(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a GGUF file\n" * 64)
    running = RunningServer("--model", "smollm2", "--model", "gemma3:270m", "--weights", f"{GEMMA}={garbage}",
                            "--ctx-size", "1024", log_path=tmp_path / "faisca.log")
    try:
        health = wait_loaded(running)
        assert health.status_code == 503
        assert health.json()["status"] == "failed"
        models = health.json()["models"]
        assert models[SMOLLM2] == "ready"
        assert models[GEMMA].startswith("failed: ") and GEMMA in models[GEMMA]
        client = openai.OpenAI(base_url=f"{running.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model=GEMMA, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert caught.value.code == "model_not_available"
        answer = client.chat.completions.create(model=SMOLLM2, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=3, temperature=0)
        assert answer.choices[0].finish_reason == "length"
    finally:
        running.stop()
