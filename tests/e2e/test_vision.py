"""Images end to end: the embedded Gemma 3 270M served with a tiny random Gemma 3 projector (`--gguf --mmproj`),
through the official OpenAI and Ollama clients, raw HTTP and `faisca run`.

The projector's weights are random, so what the model says about a picture means nothing; what is tested is the
path: images fetched or decoded, encoded by libmtmd, fed inside the batching engine, counted, cached, refused.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from PIL import Image

from tests.e2e.server import RunningServer, serving, serving_http, vision_args
from tests.pictures import png, png_claiming
from tests.projector import TOKENS_PER_IMAGE

MODEL = "gemma3-vision"
# Gemma 3 wraps each image in <start_of_image> … <end_of_image>: two text tokens beside the image's own.
TOKENS_PER_IMAGE_IN_PROMPT = TOKENS_PER_IMAGE + 2
GREEDY = {"temperature": 0, "max_tokens": 6}


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("vision")
    args = vision_args(directory, MODEL)
    assert Path(args[args.index("--mmproj") + 1]).stat().st_size < 1024 * 1024
    with serving(directory, *args, "--ctx-size", "2048", "--max-num-seqs", "4", "--allow-image-network", f"{IMAGE_HOST}/32") as running:
        yield running


# An image host on a "LAN" the vision server is told to trust (`--allow-image-network`); 127.0.0.1 stays refused.
IMAGE_HOST = "127.0.0.2"


class _ImageHost(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        port = self.server.server_address[1]
        status, headers, body = {
            "/red.png": (200, {"Content-Type": "application/octet-stream"}, png((220, 20, 20))),
            "/to-loopback": (302, {"Location": f"http://127.0.0.1:{port}/red.png"}, b""),
        }.get(self.path, (404, {}, b"no"))
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    with serving_http(IMAGE_HOST, _ImageHost) as url:
        yield url


@pytest.fixture(scope="module")
def client(vision_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{vision_server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_part(url: str) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url}}


def user(*parts: dict[str, object]) -> list[dict[str, object]]:
    return [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"}, *parts]}]


RED, BLUE = data_uri(png((220, 20, 20))), data_uri(png((20, 20, 220)))


def test_the_derived_card_reads_images(client: openai.OpenAI, vision_server: RunningServer) -> None:
    assert MODEL in {model.id for model in client.models.list().data}
    shown = httpx.post(f"{vision_server.base_url}/api/show", json={"model": MODEL}).json()
    assert "vision" in shown["capabilities"]


def test_image_tokens_are_counted_in_usage(client: openai.OpenAI) -> None:
    text_only = client.chat.completions.create(model=MODEL, messages=user(), **GREEDY)  # type: ignore[arg-type]
    one = client.chat.completions.create(model=MODEL, messages=user(image_part(RED)), **GREEDY)  # type: ignore[arg-type]
    two = client.chat.completions.create(model=MODEL, messages=user(image_part(RED), image_part(BLUE)), **GREEDY)  # type: ignore[arg-type]
    assert text_only.usage and one.usage and two.usage
    assert one.usage.prompt_tokens == text_only.usage.prompt_tokens + TOKENS_PER_IMAGE_IN_PROMPT
    assert two.usage.prompt_tokens == text_only.usage.prompt_tokens + 2 * TOKENS_PER_IMAGE_IN_PROMPT
    assert one.choices[0].message.content and one.usage.completion_tokens == 6


def test_streaming_with_images_gives_the_non_streamed_answer(client: openai.OpenAI) -> None:
    messages = user(image_part(BLUE), image_part(RED))
    whole = client.chat.completions.create(model=MODEL, messages=messages, **GREEDY)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True,  # type: ignore[arg-type]
                                                 stream_options={"include_usage": True}, **GREEDY))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage and whole.usage and chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_the_prefix_cache_knows_images_by_content(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": [{"type": "text", "text": "Cache test: describe"}, image_part(RED),
                                             {"type": "text", "text": "in one word."}]}]
    first = client.chat.completions.create(model=MODEL, messages=question, **GREEDY)  # type: ignore[arg-type]
    again = client.chat.completions.create(model=MODEL, messages=question, **GREEDY)  # type: ignore[arg-type]
    # The same picture, re-encoded (lossless WebP): the same pixels, so the same cached image.
    webp = io.BytesIO()
    Image.new("RGB", (320, 240), (220, 20, 20)).save(webp, "WEBP", lossless=True)
    reencoded = [{**question[0], "content": [question[0]["content"][0], image_part(data_uri(webp.getvalue(), "image/webp")),  # type: ignore[index]
                                             question[0]["content"][2]]}]  # type: ignore[index]
    same_pixels = client.chat.completions.create(model=MODEL, messages=reencoded, **GREEDY)  # type: ignore[arg-type]
    other = [{**question[0], "content": [question[0]["content"][0], image_part(BLUE), question[0]["content"][2]]}]  # type: ignore[index]
    different = client.chat.completions.create(model=MODEL, messages=other, **GREEDY)  # type: ignore[arg-type]
    assert first.usage and again.usage and same_pixels.usage and different.usage
    cached = [u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
              for u in (again.usage, same_pixels.usage, different.usage)]
    everything_but_the_last = first.usage.prompt_tokens - 1  # one token is always fed, for its logits
    assert cached[0] == cached[1] == everything_but_the_last  # the image (and all around it) was reused
    assert 0 < cached[2] and cached[2] + TOKENS_PER_IMAGE < everything_but_the_last  # up to the image that differs
    assert again.choices[0].message.content == first.choices[0].message.content == same_pixels.choices[0].message.content


def test_images_batched_with_other_requests_decode_as_they_do_alone(vision_server: RunningServer) -> None:
    requests = [user(image_part(RED)), user(image_part(BLUE), image_part(RED)), [{"role": "user", "content": "Hi!"}]]

    async def ask(session: httpx.AsyncClient, messages: object) -> str:
        response = await session.post("/v1/chat/completions", json={
            "model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 8})
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    async def run() -> tuple[list[str], list[str]]:
        async with httpx.AsyncClient(base_url=vision_server.base_url, timeout=120) as session:
            alone = [await ask(session, messages) for messages in requests]
            together = await asyncio.gather(*(ask(session, messages) for messages in requests))
        return alone, list(together)

    alone, together = asyncio.run(run())
    assert together == alone


def test_ollama_images_on_generate_and_chat(vision_server: RunningServer) -> None:
    client = ollama.Client(host=vision_server.base_url, timeout=120)
    options = {"temperature": 0, "num_predict": 4}
    plain = client.generate(model=MODEL, prompt="What is this?", options=options)
    with_image = client.generate(model=MODEL, prompt="What is this?", images=[png((220, 20, 20))], options=options)
    assert with_image.prompt_eval_count == (plain.prompt_eval_count or 0) + TOKENS_PER_IMAGE_IN_PROMPT
    raw = client.generate(model=MODEL, prompt="What is this?", raw=True, options=options)
    raw_with_image = client.generate(model=MODEL, prompt="What is this?", raw=True, images=[png((9, 9, 9))],
                                     options=options)
    assert raw_with_image.prompt_eval_count == (raw.prompt_eval_count or 0) + TOKENS_PER_IMAGE_IN_PROMPT
    chat = client.chat(model=MODEL, options=options, messages=[
        {"role": "user", "content": "Compare these.", "images": [png((1, 2, 3)), png((3, 2, 1))]}])
    assert chat.message.content and chat.prompt_eval_count and chat.prompt_eval_count > 2 * TOKENS_PER_IMAGE


BAD_SOURCES = {
    "bad base64": ("data:image/png;base64,%%%not-base64%%%", "not valid base64"),
    "not an image": (data_uri(b"plain text, not pixels", "image/png"), "not an image"),
    "ftp": ("ftp://example.com/cat.png", "scheme `ftp` is not supported"),
    "file": ("file:///etc/passwd", "scheme `file` is not supported"),
    "loopback": ("http://127.0.0.1:9/cat.png", "loopback"),
    "localhost": ("http://localhost/cat.png", "loopback"),
    "cloud metadata": ("http://169.254.169.254/latest/meta-data/", "link-local"),
    "private": ("http://10.0.0.7/cat.png", "private"),
    "ipv6 loopback": ("http://[::1]/cat.png", "loopback"),
    "decompression bomb": (data_uri(png_claiming(20000, 20000)), "more pixels than the [0-9]+ this server decodes"),
    "not a URL": ("a cat", "expected an http\\(s\\) URL or a data URI"),
}


@pytest.mark.parametrize("source, why", BAD_SOURCES.values(), ids=BAD_SOURCES.keys())
def test_bad_image_sources_are_a_400_naming_the_part(vision_server: RunningServer, source: str, why: str) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "Look:"}, image_part(RED), image_part(source)]}]
    response = httpx.post(f"{vision_server.base_url}/v1/chat/completions", timeout=60,
                          json={"model": MODEL, "messages": messages, "stream": True})
    assert response.status_code == 400, response.text  # before the first byte, streaming or not
    error = response.json()["error"]
    assert error["param"] == "messages.0.content.2.image_url" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages.0.content.2.image_url: ")
    assert re.search(why, error["message"]), error["message"]
    assert httpx.get(f"{vision_server.base_url}/health").json()["models"][MODEL] == "ready"


def test_an_image_url_on_an_allowed_network_is_fetched_and_read_like_its_bytes(
        client: openai.OpenAI, vision_server: RunningServer, image_host: str) -> None:
    by_url = client.chat.completions.create(model=MODEL, messages=user(image_part(f"{image_host}/red.png")), **GREEDY)  # type: ignore[arg-type]
    by_bytes = client.chat.completions.create(model=MODEL, messages=user(image_part(RED)), **GREEDY)  # type: ignore[arg-type]
    assert by_url.usage and by_bytes.usage and by_url.usage.prompt_tokens == by_bytes.usage.prompt_tokens
    assert by_url.choices[0].message.content == by_bytes.choices[0].message.content
    body = {"model": MODEL, "messages": user(image_part(f"{image_host}/to-loopback")), **GREEDY}
    response = httpx.post(f"{vision_server.base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400 and "loopback" in response.json()["error"]["message"]


def test_bad_ollama_images_are_a_400_naming_the_image(vision_server: RunningServer) -> None:
    generate = httpx.post(f"{vision_server.base_url}/api/generate", timeout=60, json={
        "model": MODEL, "prompt": "Look:", "images": [base64.b64encode(png((1, 1, 1))).decode(), "bm90IGFuIGltYWdl"]})
    assert generate.status_code == 400 and generate.json()["error"].startswith("images.1: ")
    chat = httpx.post(f"{vision_server.base_url}/api/chat", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": "Look:", "images": ["***"]}]})
    assert chat.status_code == 400 and chat.json()["error"].startswith("messages.0.images.0: ")


def test_faisca_run_attaches_a_named_image(vision_server: RunningServer, tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(png((10, 200, 10)))
    result = subprocess.run(
        [sys.executable, "-m", "faisca.cli.main", "run", MODEL, "what is in ./photo.png", "--max-tokens", "4",
         "--url", vision_server.base_url],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Added image 'photo.png'" in result.stderr and result.stdout.strip()


def test_the_context_check_counts_image_tokens(client: openai.OpenAI) -> None:
    text_only = client.chat.completions.create(model=MODEL, messages=user(), **GREEDY)  # type: ignore[arg-type]
    assert text_only.usage
    room_for_text_only = 2048 - text_only.usage.prompt_tokens  # --ctx-size 2048
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=user(image_part(RED)), max_tokens=room_for_text_only)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded"


@pytest.fixture(scope="module")
def small_kv_vision_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("vision-small-kv")
    with serving(directory, *vision_args(directory, MODEL), "--max-num-seqs", "3", "--ctx-size", "384", "--kv-cache-tokens", "384") as running:
        yield running


def test_a_preempted_sequence_recomputes_its_images(small_kv_vision_server: RunningServer) -> None:
    """Three sequences of ~230 tokens cannot share the KV cells (384, which llama.cpp rounds up to 512): the newest
    is preempted, and its image fed again."""
    no_end = {"1": -100, "106": -100}  # <eos>, <end_of_turn>: every answer runs its full length

    def ask(color: tuple[int, int, int]) -> dict[str, object]:
        return {"model": MODEL, "messages": user(image_part(data_uri(png(color)))), "max_tokens": 200,
                "temperature": 0, "logit_bias": no_end}

    colors = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    url = f"{small_kv_vision_server.base_url}/v1"
    alone = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300).chat.completions.create(
        **ask(colors[2])).choices[0].message.content  # type: ignore[call-overload]

    async def run() -> list[openai.types.chat.ChatCompletion]:
        together = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
        return await asyncio.gather(*(together.chat.completions.create(**ask(color)) for color in colors))  # type: ignore[call-overload]

    completions = asyncio.run(run())
    assert all(c.usage and c.usage.completion_tokens == 200 for c in completions)
    assert "preempted" in small_kv_vision_server.log()
    assert completions[2].choices[0].message.content[:40] == alone[:40]  # type: ignore[index]
