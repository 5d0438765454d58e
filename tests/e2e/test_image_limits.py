"""Image limits end to end: compressed bombs from an image host are refused while the server's peak memory stays
flat, and a request carrying more images than `--max-images-per-request` is refused before any is fetched.

The server is the embedded Gemma 3 270M with a tiny random projector (as in test_vision.py), told to trust an image
host on 127.0.0.2 (`--allow-image-network`); the host is a stdlib HTTP server in this process. The server admits one
request at a time, so a refused request that kept its admission would turn the next one away (503).
"""

from __future__ import annotations

import base64
import functools
import gzip
import http.server
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import RunningServer, serving, serving_http, vision_args
from tests.pictures import png

MODEL = "gemma3-vision"
IMAGE_HOST = "127.0.0.2"
MAX_IMAGES = 2
MAX_PEAK_GROWTH_BYTES = 100 * 1024 * 1024
RED_PNG = png((220, 20, 20))


@functools.cache
def one_layer_bomb() -> bytes:
    """gzip of 1.5 GiB of zeros: ~1.5 MB on the wire (made a MiB at a time)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    pieces = [compressor.compress(block) for _ in range(1536)]
    return b"".join([*pieces, compressor.flush()])


@functools.cache
def two_layer_bomb() -> bytes:
    """gzip of that gzip: ~3 KB on the wire, 1.5 GiB once both layers are undone."""
    return gzip.compress(one_layer_bomb(), 9)


class _ImageHost(http.server.BaseHTTPRequestHandler):
    paths_seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        _ImageHost.paths_seen.append(self.path)
        headers, make_body = {
            "/red.png.gz": ({"Content-Encoding": "gzip"}, lambda: gzip.compress(RED_PNG)),  # stored compressed
            "/bomb.gz": ({"Content-Encoding": "gzip"}, one_layer_bomb),
            "/bomb.gz.gz": ({"Content-Encoding": "gzip, gzip"}, two_layer_bomb),
            "/bomb.gz.gz-two-headers": ({"Content-Encoding": "gzip"}, two_layer_bomb),  # a second header below
        }.get(self.path, ({}, lambda: RED_PNG))
        body = make_body()
        try:
            self.send_response(200)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            if self.path.endswith("two-headers"):
                self.send_header("Content-Encoding", "gzip")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the server stopped reading: it refused the body
            pass


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    two_layer_bomb()  # made before the server's memory is watched
    with serving_http(IMAGE_HOST, _ImageHost) as url:
        yield url


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("image-limits")
    with serving(directory, *vision_args(directory, MODEL), "--ctx-size", "2048",
                 "--allow-image-network", f"{IMAGE_HOST}/32", "--max-images-per-request", str(MAX_IMAGES),
                 "--max-num-seqs", "1", "--max-queue", "0") as running:  # admits one request at a time
        yield running


def image_part(url: str) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url}}


def ask(server: RunningServer, *urls: str) -> httpx.Response:
    content = [{"type": "text", "text": "What is in this picture?"}, *(image_part(url) for url in urls)]
    return httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120, json={
        "model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 3, "temperature": 0})


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux's clear_refs); left as it is where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def test_compressed_bombs_are_refused_and_peak_memory_stays_flat(limited_server: RunningServer,
                                                                  image_host: str) -> None:
    # One layer of gzip on an honest image is undone (and this request warms the fetch and image paths up).
    warm = ask(limited_server, f"{image_host}/red.png.gz")
    assert warm.status_code == 200, warm.text
    pid = limited_server.process.pid
    reset_peak_rss(pid)
    peak_before = peak_rss_bytes(pid)
    for path, why in [
        ("/bomb.gz.gz", "stacked content codings \\(gzip, gzip\\)"),  # refused from its header
        ("/bomb.gz.gz-two-headers", "stacked content codings \\(gzip, gzip\\)"),
        ("/bomb.gz", f"larger than {20 * 1024 * 1024} bytes"),  # decoded only as far as the image byte limit
    ]:
        response = ask(limited_server, f"{image_host}{path}")
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "messages.0.content.1.image_url"
        assert error["message"].startswith("messages.0.content.1.image_url: ")
        assert re.search(why, error["message"]), error["message"]
    growth = peak_rss_bytes(pid) - peak_before
    assert growth < MAX_PEAK_GROWTH_BYTES, f"peak RSS grew by {growth / 2**20:.0f} MiB"
    # Refused after admission (images load only then), each gave its admission back: this server admits one.
    after = ask(limited_server, f"{image_host}/red.png")
    assert after.status_code == 200, after.text


def test_more_images_than_the_limit_are_refused_before_any_is_fetched(limited_server: RunningServer,
                                                                      image_host: str) -> None:
    _ImageHost.paths_seen.clear()
    response = ask(limited_server, *(f"{image_host}/count-{index}.png" for index in range(MAX_IMAGES + 1)))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == f"messages.0.content.{MAX_IMAGES + 1}.image_url"  # the first image over the limit
    assert "at most" in error["message"] and "--max-images-per-request" in error["message"]
    assert _ImageHost.paths_seen == []
    at_the_limit = ask(limited_server, *(f"{image_host}/count-{index}.png" for index in range(MAX_IMAGES)))
    assert at_the_limit.status_code == 200, at_the_limit.text
    assert sorted(_ImageHost.paths_seen) == [f"/count-{index}.png" for index in range(MAX_IMAGES)]


def test_the_ollama_surface_names_the_image_over_the_limit(limited_server: RunningServer) -> None:
    images = [base64.b64encode(png((index, 0, 0))).decode() for index in range(MAX_IMAGES + 1)]
    response = httpx.post(f"{limited_server.base_url}/api/chat", timeout=120, json={
        "model": MODEL, "stream": False, "messages": [{"role": "user", "content": "Look:", "images": images}]})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"messages.0.images.{MAX_IMAGES}: a request may carry")
