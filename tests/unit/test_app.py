"""The ASGI app over a scripted engine: loading state, API keys, errors after the stream started."""

from __future__ import annotations

import json
import threading

from fastapi.testclient import TestClient

from faisca.api.app import create_app
from faisca.catalog import Catalog
from faisca.config import Settings
from faisca.registry import ModelRegistry
from tests.unit.scripted import ScriptedEngine

SMOLLM2 = "huggingfacetb-smollm2-135m-instruct"
BODY = {"model": SMOLLM2, "messages": [{"role": "user", "content": "hi"}]}


def app_with(engine: ScriptedEngine, catalog: Catalog, *, api_key: str | None = None, gate: threading.Event | None = None) -> TestClient:
    def load(card: object) -> ScriptedEngine:
        if gate is not None:
            gate.wait(timeout=10)
        return engine

    registry = ModelRegistry(catalog, [SMOLLM2], load)
    return TestClient(create_app(Settings(api_key=api_key), registry), raise_server_exceptions=False)


def test_health_is_503_with_retry_after_while_loading_then_200(catalog: Catalog) -> None:
    gate = threading.Event()
    with app_with(ScriptedEngine(["a"]), catalog, gate=gate) as client:
        loading = client.get("/health")
        assert loading.status_code == 503 and loading.headers["retry-after"]
        assert loading.json()["error"]["code"] == "model_loading"
        busy = client.post("/v1/chat/completions", json=BODY)
        assert busy.status_code == 503 and busy.headers["retry-after"]
        gate.set()
        for _ in range(100):
            if client.get("/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert client.get("/health").json() == {"status": "ok", "models": {SMOLLM2: "ready"}}
        assert client.post("/v1/chat/completions", json=BODY).status_code == 200


def test_api_key_is_required_when_configured(catalog: Catalog) -> None:
    with app_with(ScriptedEngine(["a"]), catalog, api_key="sesame") as client:
        refused = client.post("/v1/chat/completions", json=BODY)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer sesame"}).status_code == 200
        assert client.get("/health").status_code == 200  # health needs no key


def test_an_error_after_the_stream_started_is_in_band_then_done(catalog: Catalog) -> None:
    with app_with(ScriptedEngine(["a", "b", "c"], fail_after=1), catalog) as client:
        with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as response:
            assert response.status_code == 200
            payloads = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])["error"]
    assert set(error) == {"message", "type", "param", "code"} and "the engine broke" in error["message"]
    assert json.loads(payloads[1])["choices"][0]["delta"] == {"content": "a"}


def test_the_same_failure_without_streaming_is_a_500_in_shape(catalog: Catalog) -> None:
    with app_with(ScriptedEngine(["a", "b"], fail_after=1), catalog) as client:
        response = client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 500
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
