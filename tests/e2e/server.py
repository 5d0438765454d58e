"""Start a real `faisca serve` on a free port and wait for it to be ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import http.server
import threading

import httpx

from faisca.catalog import Catalog
from faisca.engine.weights import resolve_gguf
from tests.projector import write_tiny_gemma3_projector

GEMMA = "google-gemma-3-270m"
SMOLLM2 = "huggingfacetb-smollm2-135m-instruct"
CONTEXT_TOKENS = 2048
# The browser tests' screenshots (one per test), kept as artifacts; test-artifacts/ is ignored by git.
SCREENSHOTS = Path(os.environ.get("FAISCA_TEST_ARTIFACTS", "test-artifacts")).resolve() / "chat-page"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


FAISCA_SERVE = (sys.executable, "-m", "faisca.cli.main", "serve")


class RunningServer:
    """`PROGRAM --port PORT ARGS...` (PROGRAM: `faisca serve` unless told; PORT: a free one unless given)."""

    def __init__(self, *args: str, log_path: Path, program: Sequence[str] = FAISCA_SERVE, port: int | None = None,
                 ready_path: str = "/health") -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.ready_path = ready_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [*program, "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"faisca serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}{self.ready_path}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"faisca serve was not ready in {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def vision_args(directory: Path, name: str) -> tuple[str, ...]:
    """`faisca serve` arguments for the embedded Gemma 3 270M reading images through a tiny random projector (written
    into `directory`), served as `name`."""
    projector = write_tiny_gemma3_projector(directory / "mmproj-tiny-gemma3.gguf")
    gguf = resolve_gguf(Catalog.from_dirs().resolve("gemma3:270m"))
    return "--gguf", str(gguf), "--mmproj", str(projector), "--name", name


@contextmanager
def serving(log_dir: Path, *args: str) -> Iterator[RunningServer]:
    """A ready `faisca serve ARGS...` for the length of the block; its log in `log_dir`."""
    running = RunningServer(*args, log_path=log_dir / "faisca.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@contextmanager
def serving_all(log_dir: Path, *arg_lists: Sequence[str]) -> Iterator[list[RunningServer]]:
    """Several ready `faisca serve ARGS...` for the length of the block, started together (their startups overlap);
    their logs `faisca-0.log`, `faisca-1.log`, ... in `log_dir`."""
    with ExitStack() as stack:
        running = []
        for index, args in enumerate(arg_lists):
            running.append(RunningServer(*args, log_path=log_dir / f"faisca-{index}.log"))
            stack.callback(running[-1].stop)
        for server in running:
            server.wait_ready()
        yield running


@contextmanager
def serving_http(host: str, handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A plain HTTP server on `host` (an image host for the tests) for the length of the block; its base URL."""
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
