"""API keys on the real server: every surface and route but /health and GET /, through the official clients;
keys from a file, from the environment; `AI.run` and `faisca run` with the key from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from faisca import AI, FaiscaClientError
from tests.e2e.server import SMOLLM2, RunningServer, serving

HI = [{"role": "user", "content": "Say hi."}]
FILE_KEYS = ("first-key-0123456789", "second-key-abcdefghij")


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("keyed")
    key_file = directory / "keys.txt"
    key_file.write_text(f"# faisca keys, one a line\n{FILE_KEYS[0]}\n\n  {FILE_KEYS[1]}  \n")
    with serving(directory, "--model", "smollm2", "--ctx-size", "1024", "--api-key-file", str(key_file),
                 "--enable-docs") as running:
        yield running


def test_the_openai_surface_needs_one_of_the_keys(keyed_server: RunningServer) -> None:
    url = f"{keyed_server.base_url}/v1"
    for key in FILE_KEYS:
        answer = openai.OpenAI(base_url=url, api_key=key, max_retries=0).chat.completions.create(
            model=SMOLLM2, messages=HI, max_tokens=3, temperature=0)  # type: ignore[arg-type]
        assert answer.choices[0].finish_reason == "length"
    wrong = openai.OpenAI(base_url=url, api_key=FILE_KEYS[0][:-1], max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model=SMOLLM2, messages=HI, max_tokens=3)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model=SMOLLM2, prompt="Hi", max_tokens=3)


def test_the_ollama_surface_needs_the_key_in_its_headers_and_errors_in_its_shape(keyed_server: RunningServer) -> None:
    keyed = ollama.Client(host=keyed_server.base_url, headers={"Authorization": f"Bearer {FILE_KEYS[1]}"})
    assert keyed.chat(model="smollm2", messages=HI, options={"num_predict": 3, "temperature": 0}).message.content
    assert "smollm2:135m" in [model.model for model in keyed.list().models]
    for client in (ollama.Client(host=keyed_server.base_url),
                   ollama.Client(host=keyed_server.base_url, headers={"Authorization": "Bearer nope"})):
        with pytest.raises(ollama.ResponseError) as caught:
            client.chat(model="smollm2", messages=HI, options={"num_predict": 3})
        assert caught.value.status_code == 401
        with pytest.raises(ollama.ResponseError) as caught:
            client.generate(model="smollm2", prompt="Hi", options={"num_predict": 3})
        assert caught.value.status_code == 401
    refused = httpx.post(f"{keyed_server.base_url}/api/chat", json={"model": "smollm2", "messages": HI})
    assert refused.status_code == 401 and set(refused.json()) == {"error"} and isinstance(refused.json()["error"], str)


def test_metrics_and_docs_need_the_key_health_and_root_do_not(keyed_server: RunningServer) -> None:
    with httpx.Client(base_url=keyed_server.base_url) as http:
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json", "/no-such-route"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "invalid_api_key", path
        keyed = {"Authorization": f"Bearer {FILE_KEYS[0]}"}
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
            assert http.get(path, headers=keyed).status_code == 200, path
        assert http.get("/health").json() == {"status": "ok", "models": {SMOLLM2: "ready"}}
        assert http.get("/").text == "faisca is running" and http.head("/").status_code == 200


def faisca_run(url: str, env_key: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "FAISCA_API_KEY"}
    env |= {"FAISCA_URL": url, **({"FAISCA_API_KEY": env_key} if env_key else {})}
    return subprocess.run([sys.executable, "-m", "faisca.cli.main", "run", "smollm2", "Say hi.", "--max-tokens", "3"],
                          capture_output=True, text=True, timeout=120, env=env)


def test_the_key_from_the_environment_on_the_server_ai_run_and_faisca_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAISCA_API_KEY", "env-key-9876543210")
    with serving(tmp_path, "--model", "smollm2", "--ctx-size", "1024") as running:
        monkeypatch.setenv("FAISCA_URL", running.base_url)
        answer = AI.run("smollm2", {"messages": HI, "max_tokens": 3, "temperature": 0})
        assert isinstance(answer, dict) and answer["choices"][0]["finish_reason"] == "length"
        assert faisca_run(running.base_url, "env-key-9876543210").returncode == 0
        refused = faisca_run(running.base_url, None)
        assert refused.returncode == 1 and "API key" in refused.stderr
        monkeypatch.delenv("FAISCA_API_KEY")
        with pytest.raises(FaiscaClientError) as caught:
            AI.run("smollm2", {"messages": HI, "max_tokens": 3})
        assert caught.value.status_code == 401


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n"])
def test_a_key_file_that_is_missing_or_empty_is_a_one_line_error(tmp_path: Path, content: str | None) -> None:
    key_file = tmp_path / "keys.txt"
    if content is not None:
        key_file.write_text(content)
    result = subprocess.run([sys.executable, "-m", "faisca.cli.main", "serve", "--api-key-file", str(key_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"faisca: --api-key-file {key_file}: ") and result.stderr.count("\n") == 1
