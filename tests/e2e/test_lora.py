"""LoRA adapters on the real engine: the embedded Gemma 3 270M with a random adapter written by tests/lora.py.

At temperature 0 an adapter's answer is llama.cpp's own for that adapter (`reference_greedy`: llama-cpp-python's
`Llama(lora_path=...)`, an independent path), and it differs from the base's. Comparisons of exact answers run on a
server of their own whose cache holds nothing yet (README "Reproducibility"); the others share one server.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import llama_cpp
import ollama
import openai
import pytest
from llama_cpp import _internals

from faisca.client import Client
from tests.e2e.server import RunningServer, free_port, serving
from tests.lora import reference_greedy, write_mismatched_lora, write_tiny_gemma3_lora

pytestmark = pytest.mark.e2e

PROMPT_TOKENS = [2, 818, 5279, 529, 7001, 563]  # <bos>"The capital of France is", as faisca tokenizes the prompt
PROMPT = "The capital of France is"
NUM_TOKENS = 8
GREEDY = {"temperature": 0, "max_tokens": NUM_TOKENS}


@pytest.fixture(scope="module")
def adapters(gemma_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with `tone.gguf` and `style.gguf` (two random adapters) and a mismatched one."""
    directory = tmp_path_factory.mktemp("adapters")
    write_tiny_gemma3_lora(directory / "tone.gguf", base_gguf=gemma_gguf)
    write_tiny_gemma3_lora(directory / "style.gguf", base_gguf=gemma_gguf, seed=1)
    write_mismatched_lora(directory / "mismatched.gguf", base_gguf=gemma_gguf, kind="shape")
    return directory


@pytest.fixture(scope="module")
def references(gemma_gguf: Path, adapters: Path) -> dict[str, str]:
    """llama.cpp's own greedy answers, as text: the base's and the `tone` adapter's."""
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    vocab = _internals.LlamaModel(path_model=str(gemma_gguf), params=params, verbose=False)
    try:
        return {
            name: vocab.detokenize(reference_greedy(gemma_gguf, lora, PROMPT_TOKENS, NUM_TOKENS),
                                   special=False).decode()
            for name, lora in (("base", None), ("tone", adapters / "tone.gguf"))
        }
    finally:
        vocab.close()


def _server(directory: Path, adapters: Path, *args: str) -> Iterator[RunningServer]:
    with serving(directory, "--model", "gemma3:270m", "--ctx-size", "1024", "--lora", f"tone={adapters / 'tone.gguf'}",
                 "--lora-dir", str(adapters), *args) as running:
        yield running


@pytest.fixture
def fresh(tmp_path: Path, adapters: Path) -> Iterator[RunningServer]:
    yield from _server(tmp_path, adapters)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, adapters: Path) -> Iterator[RunningServer]:
    yield from _server(tmp_path_factory.mktemp("shared"), adapters, "--max-loras", "2")


def _complete(server: RunningServer, model: str, **extra: object) -> dict:
    response = httpx.post(f"{server.base_url}/v1/completions", timeout=120,
                          json={"model": model, "prompt": PROMPT, **GREEDY, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_an_adapters_answer_is_llama_cpps_own_and_scale_zero_is_the_base(fresh: RunningServer,
                                                                          references: dict[str, str]) -> None:
    assert references["tone"] != references["base"]
    adapted = _complete(fresh, "tone")
    assert adapted["model"] == "tone" and adapted["choices"][0]["text"] == references["tone"]
    assert _complete(fresh, "gemma3:270m")["choices"][0]["text"] == references["base"]
    softened = _complete(fresh, "gemma3:270m", lora=[{"id": 0, "scale": 0.0}])
    assert softened["choices"][0]["text"] == references["base"]


def test_base_and_adapter_side_by_side_each_answer_as_alone(fresh: RunningServer, references: dict[str, str]) -> None:
    answers: dict[str, str] = {}

    def ask(name: str, model: str) -> None:
        answers[name] = _complete(fresh, model, max_tokens=NUM_TOKENS)["choices"][0]["text"]

    threads = [threading.Thread(target=ask, args=(f"{model}-{n}", model)) for n in range(2)
               for model in ("gemma3:270m", "tone")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert answers == {"gemma3:270m-0": references["base"], "gemma3:270m-1": references["base"],
                       "tone-0": references["tone"], "tone-1": references["tone"]}


def test_a_prefix_computed_on_the_base_is_not_cached_for_the_adapter(shared: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{shared.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "A prefix of some length, long enough to be worth caching: " * 4}]

    def cached(model: str) -> int:
        usage = client.chat.completions.create(model=model, messages=messages, max_tokens=2).usage
        return (usage.prompt_tokens_details.cached_tokens or 0) if usage.prompt_tokens_details else 0

    assert cached("gemma3:270m") == 0
    assert cached("tone") == 0  # the base's KV is not the adapter's
    assert cached("tone") > 20  # the adapter's own is
    assert cached("gemma3:270m") > 20


def test_adapters_are_models_on_every_surface(shared: RunningServer) -> None:
    models = httpx.get(f"{shared.base_url}/v1/models").json()["data"]
    assert {"id": "tone", "parent": "google-gemma-3-270m"}.items() <= next(m for m in models if m["id"] == "tone").items()
    schema = httpx.get(f"{shared.base_url}/v1/models/tone/schema").json()
    assert "lora" in schema["properties"]
    assert [entry["name"] for entry in httpx.get(f"{shared.base_url}/lora-adapters").json()] == ["tone"]
    ollama_client = ollama.Client(host=shared.base_url)
    assert "tone" in [model.model for model in ollama_client.list().models]
    answer = ollama_client.chat(model="tone", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 3})
    assert answer.done and answer.model == "tone"
    assert ollama_client.generate(model="tone", prompt="hi", options={"num_predict": 3}).done
    reply = Client(shared.base_url).run("tone", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert reply["model"] == "tone" and reply["usage"]["completion_tokens"] == 3
    run = subprocess.run([sys.executable, "-m", "faisca.cli.main", "run", "tone", "hi", "--url", shared.base_url,
                          "--max-tokens", "3"], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    mixed = httpx.post(f"{shared.base_url}/v1/chat/completions", timeout=120, json={
        "model": "gemma3:270m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
        "lora": [{"id": 0, "scale": 0.5}]})
    assert mixed.status_code == 200
    unknown = httpx.post(f"{shared.base_url}/v1/chat/completions", timeout=120, json={
        "model": "gemma3:270m", "messages": [{"role": "user", "content": "hi"}], "lora": [{"id": 99, "scale": 1}]})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "lora"


def test_load_use_unload_and_the_request_using_it_finishes(shared: RunningServer, adapters: Path) -> None:
    base = shared.base_url
    refused = [
        ({"lora_name": "bad", "lora_path": str(adapters / "mismatched.gguf")}, "incorrect shape"),
        ({"lora_name": "outside", "lora_path": "/etc/hostname"}, "--lora-dir"),
        ({"lora_name": "tone", "lora_path": str(adapters / "style.gguf")}, "already"),
        ({"lora_name": "x"}, "lora_path"),
    ]
    for body, why in refused:
        response = httpx.post(f"{base}/v1/load_lora_adapter", json=body, timeout=60)
        assert response.status_code == 400 and why in response.json()["error"]["message"], response.text
    loaded = httpx.post(f"{base}/v1/load_lora_adapter", json={"lora_name": "style",
                                                             "lora_path": str(adapters / "style.gguf")}, timeout=60)
    assert loaded.status_code == 200, loaded.text
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
    stream = client.chat.completions.create(model="style", messages=[{"role": "user", "content": "Count to fifty"}],
                                            max_tokens=48, stream=True, extra_body={"ignore_eos": True})
    chunks = iter(stream)
    next(chunks)
    unloaded = httpx.post(f"{base}/v1/unload_lora_adapter", json={"lora_name": "style"}, timeout=60)
    assert unloaded.status_code == 200, unloaded.text
    rest = list(chunks)
    assert rest[-1].choices[0].finish_reason == "length"  # it finished with the adapter it started with
    gone = httpx.post(f"{base}/v1/chat/completions", timeout=60,
                      json={"model": "style", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert gone.status_code == 404
    assert httpx.post(f"{base}/v1/unload_lora_adapter", json={"lora_name": "style"}).status_code == 404


def test_a_card_without_lora_and_an_adapter_that_does_not_fit_stop_the_server_at_start(
        tmp_path: Path, adapters: Path, smollm2_gguf: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "faisca.cli.main", "serve", "--port", str(free_port()), *args],
                              capture_output=True, text=True, timeout=180, check=False)

    mistral = serve("--model", "mistral-small:24b", "--weights", f"mistral-small:24b={smollm2_gguf}",
                    "--lora", f"tone={adapters / 'tone.gguf'}")
    assert mistral.returncode == 2 and "takes no LoRA adapters" in mistral.stderr
    mismatched = serve("--model", "gemma3:270m", "--lora", f"bad={adapters / 'mismatched.gguf'}")
    assert mismatched.returncode == 2 and "incorrect shape" in mismatched.stderr.splitlines()[-1]
