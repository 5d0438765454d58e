"""What an image costs, and what it costs the other streams: faisca vs. llama_cpp.server, both over libmtmd.

Not a test. No Gemma 3 vision weights are reachable here, so the projector is a random one of the real shape
(SigLIP So400m at 896 px, 27 layers, f16, 845 MB, written once into --workdir): every multiply is done, only the
numbers are meaningless. The text model is the embedded Gemma 3 270M (the peer gets a copy of its GGUF carrying
Gemma 3's chat template, which its mtmd handler needs). For each server:

  text TTFT      time to the first token of a short text-only request;
  image TTFT     the same with one new 1024x768 photo-like image (decoded, resized to 896, encoded: 256 tokens);
  stream gap     the longest pause between two tokens of a text stream (greedy, 2500 tokens) while an image request
                 arrives 2 s into it, and the stream's tok/s before and during that time ("cut": the server
                 ended the stream instead; llama_cpp.server interrupts a running request for a new one);
  image waited   that image request's time to its first token, beside the stream.

    .venv/bin/pip install -r bench/requirements.txt gguf
    .venv/bin/python bench/vision.py [--threads 2] [--workdir /tmp/faisca-bench-vision] [--skip-peer]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faisca.catalog import Catalog  # noqa: E402
from faisca.engine.weights import resolve_gguf  # noqa: E402
from servers import free_port, running  # noqa: E402
from tests.projector import GEMMA3_SIGLIP, write_tiny_gemma3_projector  # noqa: E402

CONTEXT_TOKENS = 4096
STREAM_TOKENS = 2500  # long enough to outlast an image's encoding beside it
NO_END = {"1": -100, "106": -100}  # <eos>, <end_of_turn>: the stream runs its full length


def photo_like(seed: int) -> str:
    """A new 1024x768 JPEG (smooth noise, so it compresses like a photo), as a data URI."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((1024, 768), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def token_times(base_url: str, body: dict[str, object], stamps: list[float] | None = None) -> list[float]:
    """perf_counter() at each streamed content chunk, after the time the request was sent (the first entry)."""
    stamps = [] if stamps is None else stamps
    stamps.append(time.perf_counter())
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=900) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                stamps.append(time.perf_counter())
    return stamps


def stream_into(base_url: str, body: dict[str, object], stamps: list[float], outcome: list[str]) -> None:
    try:
        token_times(base_url, body, stamps)
        outcome.append("done")
    except httpx.HTTPError:
        outcome.append("cut")


def ask(model: str, text: str, image: str | None = None, **options: object) -> dict[str, object]:
    content: object = text if image is None else [{"type": "text", "text": text},
                                                  {"type": "image_url", "image_url": {"url": image}}]
    return {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, **options}


def measure(base_url: str, model: str, seed: int) -> dict[str, float]:
    token_times(base_url, ask(model, "Hello!", max_tokens=2))  # warm-up
    text = token_times(base_url, ask(model, "Describe a cat.", max_tokens=2))
    image = token_times(base_url, ask(model, "Describe this picture.", photo_like(seed), max_tokens=2))
    stream: list[float] = []
    outcome: list[str] = []
    streaming = threading.Thread(target=stream_into, args=(
        base_url, ask(model, "Tell a long story.", max_tokens=STREAM_TOKENS, logit_bias=NO_END), stream, outcome))
    streaming.start()
    time.sleep(2.0)
    image_sent_s = time.perf_counter()
    waited = token_times(base_url, ask(model, "Describe this picture.", photo_like(seed + 1), max_tokens=2))
    streaming.join()
    first_image_token_s = waited[1]
    before = [t for t in stream[1:] if t < image_sent_s]
    during_end_s = min(first_image_token_s, stream[-1])  # the stream may end first
    during = [t for t in stream[1:] if image_sent_s <= t <= during_end_s]
    gaps = np.diff([t for t in stream[1:] if t >= before[-1]]) if before else np.array([0.0])
    return {
        "text_ttft_s": text[1] - text[0],
        "image_ttft_s": image[1] - image[0],
        "stream_gap_s": float(gaps.max()),
        "stream_tok_s_before": (len(before) - 1) / (before[-1] - before[0]) if len(before) > 1 else 0.0,
        "stream_tok_s_during": len(during) / (during_end_s - image_sent_s) if during else 0.0,
        "image_waited_s": first_image_token_s - image_sent_s,
        "stream_was_cut": float(outcome != ["done"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/faisca-bench-vision"))
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    projector = args.workdir / "mmproj-gemma3-siglip-random-f16.gguf"
    if not projector.is_file():
        print(f"writing {projector} (845 MB, random) ...", flush=True)
        write_tiny_gemma3_projector(projector.with_suffix(".partial"), **GEMMA3_SIGLIP).rename(projector)
    gguf = resolve_gguf(Catalog.from_dirs().resolve("gemma3:270m"))
    rows: dict[str, dict[str, float]] = {}

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with running([sys.executable, "-m", "faisca.cli.main", "serve", "--port", str(port), "--threads", str(args.threads),
                  "--ctx-size", str(CONTEXT_TOKENS), "--gguf", str(gguf), "--mmproj", str(projector),
                  "--name", "gemma3-vision"], f"{base_url}/health"):
        rows["faisca"] = measure(base_url, "gemma3-vision", seed=1)

    if not args.skip_peer:
        with_template = args.workdir / "gemma-3-270m-with-template.gguf"
        if not with_template.is_file():
            template = Path(__file__).resolve().parent.parent / "src/faisca/chat/templates/gemma3.jinja"
            subprocess.run([str(Path(sys.executable).parent / "gguf-new-metadata"), "--chat-template-file",
                            str(template), str(gguf), str(with_template)], check=True, capture_output=True)
        port = free_port()
        peer_url = f"http://127.0.0.1:{port}"
        with running([sys.executable, "-m", "llama_cpp.server", "--model", str(with_template), "--port", str(port),
                      "--n_threads", str(args.threads), "--n_ctx", str(CONTEXT_TOKENS), "--chat_format", "mtmd",
                      "--clip_model_path", str(projector)], f"{peer_url}/v1/models"):
            rows["peer"] = measure(peer_url, "gemma", seed=1)

    print(f"Gemma 3 270M Q4_K_M + a random Gemma 3 SigLIP projector (real shape, f16), {args.threads} threads")
    print(f"{'':8} {'text TTFT s':>11} {'image TTFT s':>12} {'stream gap s':>12} {'stream tok/s before/during':>27} "
          f"{'image waited s':>14}")
    for name, row in rows.items():
        gap = "cut" if row["stream_was_cut"] else f"{row['stream_gap_s']:.1f}"
        print(f"{name:8} {row['text_ttft_s']:11.2f} {row['image_ttft_s']:12.1f} {gap:>12} "
              f"{row['stream_tok_s_before']:13.1f} / {row['stream_tok_s_during']:<11.1f} {row['image_waited_s']:14.1f}")
    if "peer" in rows:
        faisca, peer = rows["faisca"], rows["peer"]
        print(f"faisca/peer image TTFT ratio:  {faisca['image_ttft_s'] / peer['image_ttft_s']:.3f} (lower is faster)")
        print(f"faisca/peer image-beside-a-stream ratio: {faisca['image_waited_s'] / peer['image_waited_s']:.3f}")


if __name__ == "__main__":
    main()
