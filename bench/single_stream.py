"""What serving costs over the bare engine, for one stream: faisca vs. llama.cpp in process vs. llama_cpp.server.

Not a test. Prints decode tok/s and time to first token for:
  engine   faisca's LlamaCppEngine called in process (no HTTP, no event loop in the way),
  faisca   `faisca serve`, streamed over HTTP with the official openai client,
  peer     `python -m llama_cpp.server` on the same GGUF, threads and context (needs `pip install
           'llama-cpp-python[server]'` in the same venv), streamed the same way,
and the ratios faisca/engine (the cost of the HTTP event loop beside the engine) and faisca/peer.
Greedy decoding on the same prompt, so every contestant decodes the same tokens.

    .venv/bin/python bench/single_stream.py [--threads 2] [--tokens 128] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from openai import OpenAI

from faisca.catalog import Catalog
from faisca.engine.base import TokenOut
from faisca.engine.llama_cpp import LlamaCppEngine
from faisca.engine.weights import resolve_gguf
from faisca.types import SamplingParams
from servers import faisca_command, free_port, llama_cpp_server_command, running

PROMPT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
          "combined movable metal type, oil-based ink and a wooden press adapted from wine making. ")
CONTEXT_TOKENS = 2048


def measure_engine(gguf: Path, threads: int, num_tokens: int) -> tuple[float, float, int]:
    engine = LlamaCppEngine.load(gguf, name="bench", max_context_tokens=CONTEXT_TOKENS, num_threads=threads)
    prompt = engine.encode_prompt(f"<bos><start_of_turn>user\n{PROMPT}<end_of_turn>\n<start_of_turn>model\n")

    async def run() -> tuple[float, float, int]:
        started = time.perf_counter()
        stamps = []
        async for event in engine.generate(prompt, SamplingParams(temperature=0.0), num_tokens):
            if isinstance(event, TokenOut):
                stamps.append(time.perf_counter())
        return stamps[0] - started, (len(stamps) - 1) / (stamps[-1] - stamps[0]), len(stamps)

    try:
        asyncio.run(run())  # warm-up
        return asyncio.run(run())
    finally:
        asyncio.run(engine.close())


def measure_http(base_url: str, model: str, num_tokens: int) -> tuple[float, float, int]:
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    started = time.perf_counter()
    stamps = []
    for chunk in client.chat.completions.create(model=model, stream=True, temperature=0, max_tokens=num_tokens,
                                                messages=[{"role": "user", "content": PROMPT}]):
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    return stamps[0] - started, (len(stamps) - 1) / (stamps[-1] - stamps[0]), len(stamps)


def best_of(runs: int, measure) -> tuple[float, float, int]:  # noqa: ANN001
    results = [measure() for _ in range(runs)]
    return min(r[0] for r in results), statistics.median(r[1] for r in results), results[0][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    gguf = resolve_gguf(Catalog.from_dirs().resolve("gemma3:270m"))
    rows: dict[str, tuple[float, float, int]] = {}

    rows["engine"] = best_of(args.runs, lambda: measure_engine(gguf, args.threads, args.tokens))

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with running(faisca_command(port, threads=args.threads, context_tokens=CONTEXT_TOKENS), f"{base_url}/health"):
        measure_http(base_url, "gemma3:270m", 8)  # warm-up
        rows["faisca"] = best_of(args.runs, lambda: measure_http(base_url, "gemma3:270m", args.tokens))

    port = free_port()
    peer_url = f"http://127.0.0.1:{port}"
    try:
        with running(llama_cpp_server_command(gguf, port, threads=args.threads, context_tokens=CONTEXT_TOKENS),
                     f"{peer_url}/v1/models"):
            measure_http(peer_url, "gemma", 8)
            rows["peer"] = best_of(args.runs, lambda: measure_http(peer_url, "gemma", args.tokens))
    except RuntimeError as exc:
        print(f"peer skipped: {exc} (pip install -r bench/requirements.txt)")

    print(f"Gemma 3 270M Q4_K_M, {args.threads} threads, {args.tokens} tokens greedy, median of {args.runs}")
    print(f"{'':8} {'decode tok/s':>12} {'TTFT ms':>8} {'tokens':>6}")
    for name, (ttft_s, tok_per_s, num_tokens) in rows.items():
        print(f"{name:8} {tok_per_s:12.1f} {ttft_s * 1000:8.0f} {num_tokens:6d}")
    print(f"faisca/engine decode ratio: {rows['faisca'][1] / rows['engine'][1]:.3f}")
    if "peer" in rows:
        print(f"faisca/peer decode ratio:   {rows['faisca'][1] / rows['peer'][1]:.3f}")


if __name__ == "__main__":
    main()
