"""The ASGI app over a scripted engine: loading and failed states, API keys, docs, draining, errors after the
stream started."""

from __future__ import annotations

import json
import threading

from fastapi.testclient import TestClient

from faisca.api.app import create_app
from faisca.api.drain import Drain
from faisca.catalog import Catalog
from faisca.config import Settings
from faisca.registry import ModelRegistry
from tests.unit.scripted import ScriptedEngine

SMOLLM2 = "huggingfacetb-smollm2-135m-instruct"
BODY = {"model": SMOLLM2, "messages": [{"role": "user", "content": "hi"}]}


def app_with(engine: ScriptedEngine, catalog: Catalog, *, api_keys: tuple[str, ...] = (),
             gate: threading.Event | None = None, enable_docs: bool = False, drain: Drain | None = None) -> TestClient:
    def load(card: object) -> ScriptedEngine:
        if gate is not None:
            gate.wait(timeout=10)
        return engine

    registry = ModelRegistry(catalog, [SMOLLM2], load)
    settings = Settings(api_keys=api_keys, enable_docs=enable_docs)
    return TestClient(create_app(settings, registry, drain=drain), raise_server_exceptions=False)


def wait_loaded(client: TestClient) -> None:
    for _ in range(200):
        if client.get("/health").json().get("status"):
            return
        threading.Event().wait(0.05)


def test_health_is_503_with_retry_after_while_loading_and_requests_wait_then_200(catalog: Catalog) -> None:
    gate = threading.Event()
    with app_with(ScriptedEngine(["a"]), catalog, gate=gate) as client:
        loading = client.get("/health")
        assert loading.status_code == 503 and loading.headers["retry-after"]
        assert loading.json()["error"]["code"] == "model_loading"
        waiting: list[int] = []  # a request meanwhile waits for the load, as on Ollama
        thread = threading.Thread(target=lambda: waiting.append(client.post("/v1/chat/completions", json=BODY).status_code))
        thread.start()
        threading.Event().wait(0.3)
        assert not waiting
        gate.set()
        thread.join(timeout=10)
        assert waiting == [200]
        for _ in range(100):
            if client.get("/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert client.get("/health").json() == {"status": "ok", "models": {SMOLLM2: "ready"}}
        assert client.post("/v1/chat/completions", json=BODY).status_code == 200


def test_api_key_is_required_when_configured(catalog: Catalog) -> None:
    with app_with(ScriptedEngine(["a"]), catalog, api_keys=("sesame",)) as client:
        refused = client.post("/v1/chat/completions", json=BODY)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer sesame"}).status_code == 200
        assert client.get("/health").status_code == 200  # health needs no key


def test_every_route_but_health_and_root_needs_a_key_in_its_surface_shape(catalog: Catalog) -> None:
    with app_with(ScriptedEngine(["a"]), catalog, api_keys=("sesame", "open-too")) as client:
        wait_loaded(client)
        for method, path in [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/v1/models"),
                             ("GET", "/metrics"), ("GET", "/no-such-route"), ("POST", "/"), ("GET", "/docs"),
                             ("GET", "/openapi.json")]:
            refused = client.request(method, path, json=BODY)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "invalid_api_key", path
        for method, path in [("POST", "/api/chat"), ("POST", "/api/generate"), ("GET", "/api/tags"),
                             ("GET", "/api/version"), ("POST", "/api/show")]:
            refused = client.request(method, path, json=BODY, headers={"Authorization": "Bearer sesame2"})
            assert refused.status_code == 401, path
            assert set(refused.json()) == {"error"} and isinstance(refused.json()["error"], str), path
        for key in ("sesame", "open-too"):
            headers = {"Authorization": f"Bearer {key}"}
            assert client.get("/metrics", headers=headers).status_code == 200
            assert client.get("/api/tags", headers=headers).status_code == 200
            assert client.post("/api/chat", headers=headers, json={**BODY, "stream": False}).status_code == 200
        assert client.get("/v1/models", headers={"Authorization": "Basic sesame"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer sesam"}).status_code == 401
        assert client.get("/").status_code == client.head("/").status_code == 200


def test_the_root_is_text_for_clients_and_the_chat_page_for_browsers_without_a_key(catalog: Catalog) -> None:
    with app_with(ScriptedEngine(["a"]), catalog, api_keys=("sesame",)) as client:
        for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
            root = client.get("/", headers=headers)
            assert root.text == "faisca is running" and root.headers["content-type"].startswith("text/plain")
            assert root.headers["vary"] == "Accept"
        browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
        for path, headers in (("/", browser), ("/ui", {}), ("/ui/", {})):
            page = client.get(path, headers=headers)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
            assert '<script src="/ui/chat.js" defer></script>' in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
        assert client.head("/ui").status_code == 200
        for name, media_type in (("chat.js", "text/javascript"), ("markdown.js", "text/javascript"),
                                 ("chat.css", "text/css"), ("icon.svg", "image/svg+xml")):
            asset = client.get(f"/ui/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type), name
            assert asset.headers["x-content-type-options"] == "nosniff"
        for path in ("/ui/nope.js", "/ui/..%2fpage.py", "/ui/static/chat.js"):
            assert client.get(path).status_code == 404, path  # only the page's own files, and no key asked
        assert client.post("/ui", json={}).status_code == 401  # the page is public to GET and HEAD only
        assert client.get("/uix").status_code == 401


def test_docs_are_off_unless_enabled_and_then_need_the_key(catalog: Catalog) -> None:
    with app_with(ScriptedEngine(["a"]), catalog) as client:
        assert [client.get(path).status_code for path in ("/docs", "/redoc", "/openapi.json")] == [404, 404, 404]
    with app_with(ScriptedEngine(["a"]), catalog, api_keys=("sesame",), enable_docs=True) as client:
        assert client.get("/openapi.json").status_code == 401
        headers = {"Authorization": "Bearer sesame"}
        assert [client.get(path, headers=headers).status_code for path in ("/docs", "/redoc", "/openapi.json")] == [200] * 3


def test_health_is_503_naming_a_model_that_failed_to_load(catalog: Catalog) -> None:
    def load(card: object) -> ScriptedEngine:
        raise RuntimeError("not a GGUF file")

    registry = ModelRegistry(catalog, [SMOLLM2], load)
    with TestClient(create_app(Settings(), registry), raise_server_exceptions=False) as client:
        wait_loaded(client)
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "failed"
        assert "not a GGUF file" in health.json()["models"][SMOLLM2]


def test_health_is_503_once_an_engine_is_not_alive_and_its_requests_fail_at_once(catalog: Catalog) -> None:
    engine = ScriptedEngine(["a"])
    with app_with(engine, catalog) as client:
        wait_loaded(client)
        assert client.get("/health").status_code == 200
        engine.is_alive = False
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert health.json()["models"][SMOLLM2].startswith("failed: ")
        failed = client.post("/v1/chat/completions", json=BODY)
        assert failed.status_code == 500 and "has stopped" in failed.json()["error"]["message"]
        assert not engine.calls


def test_while_draining_new_requests_get_503_in_their_surface_shape_and_health_says_so(catalog: Catalog) -> None:
    drain = Drain()
    with app_with(ScriptedEngine(["a"]), catalog, drain=drain) as client:
        wait_loaded(client)
        drain.start()
        health = client.get("/health")
        assert health.status_code == 503 and health.headers["retry-after"]
        assert health.json() == {"status": "draining", "models": {SMOLLM2: "ready"}}
        openai_refused = client.post("/v1/chat/completions", json=BODY)
        assert openai_refused.status_code == 503 and openai_refused.headers["retry-after"]
        assert openai_refused.json()["error"]["code"] == "shutting_down"
        ollama_refused = client.post("/api/chat", json=BODY)
        assert ollama_refused.status_code == 503 and ollama_refused.headers["retry-after"]
        assert set(ollama_refused.json()) == {"error"}
        assert drain.num_in_flight == 0


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
