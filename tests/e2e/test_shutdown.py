"""Graceful shutdown on the real server: SIGTERM drains (new requests get 503 in their surface's shape, /health says
"draining", the streams in flight finish normally) and the process exits 0; a process whose event loop is stuck
still exits, ended by the watchdog."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai

from tests.e2e.server import GEMMA, RunningServer, free_port

STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
NO_END = {"1": -100, "106": -100}  # Gemma 3's end-of-generation tokens banned: the answer runs to max_tokens


def wait_until(condition, what: str, timeout_s: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


class HeldRequest:
    """A streamed chat completion whose body the client holds back after its first bytes: the server has started
    it (its handler waits for the rest of the body), and it stays in flight for as long as the test wants."""

    def __init__(self, base_url: str, body: dict[str, object]) -> None:
        self._payload = json.dumps(body).encode()
        self.has_started = threading.Event()
        self.release = threading.Event()
        self.status_code: int | None = None
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._send, args=(base_url,), daemon=True)
        self._thread.start()

    def _body(self) -> Iterator[bytes]:
        yield self._payload[:8]
        self.has_started.set()  # resumed: the headers and the first bytes are on the wire
        self.release.wait(300)
        yield self._payload[8:]

    def _send(self, base_url: str) -> None:
        headers = {"Content-Type": "application/json"}
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", content=self._body(), headers=headers,
                          timeout=300) as response:
            self.status_code = response.status_code
            self.lines = [line for line in response.iter_lines() if line]

    def finish(self) -> None:
        self.release.set()
        self._thread.join(300)


def test_sigterm_drains_in_flight_streams_refuses_new_requests_then_exits_0(tmp_path: Path) -> None:
    # a drain timeout the streams never reach, even on a loaded machine: they finish in full
    running = RunningServer("--model", "gemma3:270m", "--ctx-size", "1024", "--drain-timeout", "900",
                            log_path=tmp_path / "faisca.log")
    try:
        running.wait_ready()
        held = HeldRequest(running.base_url, {"model": GEMMA, "messages": STORY, "stream": True, "max_tokens": 20,
                                              "temperature": 0, "logit_bias": NO_END})
        assert held.has_started.wait(60)
        client = openai.OpenAI(base_url=f"{running.base_url}/v1", api_key="unused", max_retries=0, timeout=300)
        stream = client.chat.completions.create(model=GEMMA, messages=STORY, stream=True, max_tokens=100,  # type: ignore[arg-type]
                                                temperature=0, logit_bias=NO_END,
                                                stream_options={"include_usage": True})
        chunks = [next(stream)]  # it runs

        running.process.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{running.base_url}/health").status_code == 503, "the server drains")
        health = httpx.get(f"{running.base_url}/health")
        assert health.json() == {"status": "draining", "models": {GEMMA: "ready"}}
        refused = httpx.post(f"{running.base_url}/v1/chat/completions",
                             json={"model": GEMMA, "messages": STORY, "max_tokens": 3})
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
        assert refused.json()["error"]["code"] == "shutting_down"
        refused = httpx.post(f"{running.base_url}/api/chat", json={"model": "gemma3:270m", "messages": STORY})
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
        assert set(refused.json()) == {"error"} and isinstance(refused.json()["error"], str)
        assert running.process.poll() is None  # the held request is still in flight

        chunks += list(stream)
        assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 100
        held.finish()  # its body completes now, during the drain: it is answered in full
        assert held.status_code == 200 and held.lines[-1] == "data: [DONE]"
        assert json.loads(held.lines[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "length"
        assert running.process.wait(timeout=300) == 0
    finally:
        running.stop()


def test_an_idle_server_exits_0_on_sigterm_at_once(tmp_path: Path) -> None:
    running = RunningServer("--model", "smollm2", "--ctx-size", "1024", "--drain-timeout", "600",
                            log_path=tmp_path / "faisca.log")
    try:
        running.wait_ready()
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=60) == 0  # nothing in flight: no waiting for the 600 s
        assert "draining" in running.log()
    finally:
        running.stop()


STUCK_SERVER = """
import sys, time
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from faisca.api.drain import Drain, RefuseWhileDraining
from faisca.cli.server import DrainingServer

async def freeze(request):
    print("frozen", flush=True)
    time.sleep(3600)  # the event loop never runs again

async def ok(request):
    return PlainTextResponse("ok")

drain = Drain()
app = RefuseWhileDraining(Starlette(routes=[Route("/freeze", freeze), Route("/ok", ok)]), drain=drain)
config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
DrainingServer(config, drain=drain, drain_timeout_s=1, grace_s=1).run()
"""


def test_a_process_whose_event_loop_is_stuck_still_exits_after_the_drain_timeout(tmp_path: Path) -> None:
    script = tmp_path / "stuck_server.py"
    script.write_text(STUCK_SERVER)
    port = free_port()
    process = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/ok", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, "the server starts")
        def freeze() -> None:
            try:
                httpx.get(f"http://127.0.0.1:{port}/freeze", timeout=300)
            except httpx.TransportError:  # the process ends without answering
                pass

        threading.Thread(target=freeze, daemon=True).start()
        assert process.stdout is not None and process.stdout.readline().strip() == "frozen"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 1
        assert "exiting" in process.stderr.read()  # type: ignore[union-attr]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
