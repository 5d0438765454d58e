"""Starting and stopping the servers a benchmark compares (faisca, llama_cpp.server, llama.cpp's llama-server)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(command: list[str], ready_url: str, *, timeout_s: float = 180) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` until the block ends, once `ready_url` answers 200."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline_s = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline_s:
                raise RuntimeError(f"{' '.join(command[:3])} did not start")
            time.sleep(0.3)
        yield process
    finally:
        process.terminate()
        process.wait()


def faisca_command(port: int, *, threads: int, context_tokens: int) -> list[str]:
    """`faisca serve` on the embedded default model, loaded at start (pinned: no first request pays the load)."""
    return [sys.executable, "-m", "faisca.cli.main", "serve", "--model", "gemma3:270m", "--port", str(port),
            "--threads", str(threads), "--ctx-size", str(context_tokens)]


def llama_cpp_server_command(gguf: Path, port: int, *, threads: int, context_tokens: int) -> list[str]:
    """`python -m llama_cpp.server` on the same GGUF, threads and context, with Gemma's chat format."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_threads", str(threads),
            "--n_ctx", str(context_tokens), "--port", str(port), "--chat_format", "gemma"]
