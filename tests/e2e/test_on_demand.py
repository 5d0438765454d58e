"""Models load when asked for and leave when idle, as on Ollama (issue 15): real servers started without `--model`,
the two embedded models and a derived copy of SmolLM2 from a `--models-dir`, driven with the official clients."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.e2e.server import GEMMA, SMOLLM2, serving

pytestmark = pytest.mark.e2e
COPY = "smollm2-copy"  # the derived card of smollm2-copy.gguf


def loaded(http: httpx.Client) -> dict[str, dict]:
    return {entry["name"]: entry for entry in http.get("/api/ps").json()["models"]}


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    wanted = "".join(f'(?=[^}}]*{key}="{re.escape(value)}")' for key, value in labels.items())
    found = re.findall(rf"^{name}{{{wanted}[^}}]*}} (\S+)$", http.get("/metrics").text, re.MULTILINE)
    return sum(float(value) for value in found)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_models_load_on_first_request_and_leave_when_idle(tmp_path: Path, smollm2_gguf: Path) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    shutil.copy(smollm2_gguf, models_dir / f"{COPY}.gguf")
    with serving(tmp_path, "--models-dir", str(models_dir), "--ctx-size", "1024", "--keep-alive", "2") as server, \
            httpx.Client(base_url=server.base_url, timeout=120) as http:
        assert http.get("/health").json() == {"status": "ok", "models": {}}  # nothing loaded, and healthy
        assert loaded(http) == {}
        tags = {entry["model"] for entry in http.get("/api/tags").json()["models"]}
        assert {"gemma3:270m", "smollm2:135m", COPY} <= tags
        assert {GEMMA, SMOLLM2, COPY} <= {model["id"] for model in http.get("/v1/models").json()["data"]}
        rss_before = rss_bytes(server.process.pid)

        # the README's own example, right after a bare `faisca serve`
        run = subprocess.run([sys.executable, "-m", "faisca.cli.main", "run", "smollm2", "Say hi.", "--url",
                              server.base_url, "--max-tokens", "8"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.strip(), run.stderr

        # three concurrent first requests share one load
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: client.completions.create(
                model="gemma3:270m", prompt="The capital of France is", max_tokens=4, temperature=0,
                extra_body={"keep_alive": "1m"}), range(3)))
        assert len({answer.choices[0].text for answer in answers}) == 1
        assert metric(http, "faisca_model_loads_total", model=GEMMA) == 1

        # the derived copy, through Ollama's client, streamed: the stream stays open while it loads
        ollama_client = ollama.Client(host=server.base_url, timeout=120)
        pieces = list(ollama_client.chat(model=COPY, messages=[{"role": "user", "content": "Hi"}], stream=True,
                                         options={"num_predict": 4}, keep_alive="1m"))
        assert pieces[-1].done
        assert ollama_client.generate(model="smollm2", prompt="", keep_alive=60).done_reason == "load"

        running = loaded(http)
        assert set(running) == {"gemma3:270m", "smollm2:135m", COPY}
        now = datetime.now(timezone.utc)
        for name, entry in running.items():
            expires = datetime.fromisoformat(entry["expires_at"].replace("Z", "+00:00"))
            assert 45 < (expires - now).total_seconds() <= 61, name
        assert running[COPY]["size"] == running["smollm2:135m"]["size"] > smollm2_gguf.stat().st_size
        assert running["gemma3:270m"]["size"] == metric(http, "faisca_model_memory_bytes", model=GEMMA)
        # their real size: the estimate against what the process grew by
        grown = rss_bytes(server.process.pid) - rss_before
        assert 0.7 * grown <= sum(entry["size"] for entry in running.values()) <= 1.3 * grown, grown

        # keep_alive 0 on an empty request unloads now, as Ollama's clients ask it
        unloaded = ollama_client.generate(model="smollm2", prompt="", keep_alive=0)
        assert unloaded.done_reason == "unload"
        assert "smollm2:135m" not in loaded(http)
        assert metric(http, "faisca_model_unloads_total", model=SMOLLM2, reason="keep_alive_0") == 1
        # ... and as an OpenAI extension: the model leaves once the request ends
        client.chat.completions.create(model=COPY, messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                       extra_body={"keep_alive": 0})
        time.sleep(0.5)
        assert COPY not in loaded(http)
        for bad in ({"model": "gemma3:270m", "prompt": "x", "keep_alive": "5 minutes"},
                    {"model": "gemma3:270m", "prompt": "x", "keep_alive": "-1"}):
            refused = http.post("/api/generate", json=bad)
            assert refused.status_code == 400 and "keep_alive" in refused.json()["error"]
        refused = http.post("/v1/completions", json={"model": "gemma3:270m", "prompt": "x", "keep_alive": "soon"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "keep_alive"

        # idle for longer than --keep-alive (a request without keep_alive sets the default again): gone, /health 200
        client.completions.create(model="gemma3:270m", prompt="Hi", max_tokens=1)
        time.sleep(3)
        assert loaded(http) == {}
        assert http.get("/health").status_code == 200
        assert metric(http, "faisca_model_unloads_total", model=GEMMA, reason="idle") == 1
        assert metric(http, "faisca_model_unloads_total", model=SMOLLM2, reason="idle") == 1  # after `faisca run`
        assert metric(http, "faisca_model_load_seconds_count", model=GEMMA) == 1
        # a negative keep_alive keeps it forever
        ollama_client.generate(model="gemma3:270m", prompt="", keep_alive=-1)
        time.sleep(3)
        assert datetime.fromisoformat(loaded(http)["gemma3:270m"]["expires_at"].replace("Z", "+00:00")).year > 2200
        # embeddings and tokens load their model too (smollm2 left when idle above)
        assert http.post("/v1/embeddings", json={"model": "smollm2", "input": "hi"}).status_code == 200
        assert http.post("/tokenize", json={"model": "smollm2", "content": "hi"}).json()["tokens"]
        assert "smollm2:135m" in loaded(http)


def test_a_budget_of_one_model_swaps_them_and_never_evicts_one_streaming(tmp_path: Path) -> None:
    with serving(tmp_path, "--ctx-size", "1024", "--max-loaded-models", "1") as server, \
            httpx.Client(base_url=server.base_url, timeout=120) as http:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        stream = client.chat.completions.create(model="gemma3:270m", messages=[{"role": "user", "content": "Count"}],
                                                max_tokens=200, stream=True, extra_body={"ignore_eos": True})
        first = next(iter(stream))
        assert first.choices
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert caught.value.status_code == 503 and int(caught.value.response.headers["retry-after"]) > 0
        assert set(loaded(http)) == {"gemma3:270m"}
        chunks = list(stream)  # the stream was never cut
        assert chunks[-1].choices[0].finish_reason == "length"
        answer = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=2)
        assert answer.choices[0].message.content is not None
        assert set(loaded(http)) == {"smollm2:135m"}
        assert metric(http, "faisca_model_unloads_total", model=GEMMA, reason="evicted") == 1
        # a model that could never fit the budget is a 400, not an out-of-memory kill
    with serving(tmp_path, "--ctx-size", "1024", "--memory-budget", "50MiB") as server:
        refused = httpx.post(f"{server.base_url}/api/generate", json={"model": "smollm2", "prompt": "hi"}, timeout=60)
        assert refused.status_code == 400 and "memory budget" in refused.json()["error"]
