"""Serving throughput and latency under concurrency: faisca vs. `python -m llama_cpp.server`, same GGUF and threads.

Not a test. The official AsyncOpenAI client sends, at each concurrency level (1, 2, 4, 8), that many workers
each making `--requests` requests in a row: a 131-token prompt (as the model sees it, template included),
128 generated tokens with end-of-generation banned by logit_bias so every request generates exactly 128.
Prints aggregate tok/s, TTFT p50/p95 and inter-token latency p50 per level and server, then faisca/peer
ratios. The peer needs `pip install -r bench/requirements.txt`.

    .venv/bin/python bench/serving.py [--threads 2] [--requests 2] [--levels 1,2,4,8] [--skip-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llama_cpp import Llama
from openai import AsyncOpenAI

from faisca.catalog import Catalog
from faisca.engine.weights import resolve_gguf
from servers import free_port, running

GEMMA3_TEMPLATE = Path(__file__).parents[1] / "src" / "faisca" / "chat" / "templates" / "gemma3.jinja"
PROMPT_TOKENS = 131
GENERATED_TOKENS = 128
END_TOKENS_BANNED = {"1": -100, "106": -100}  # Gemma 3's <eos> and <end_of_turn>
CONTEXT_TOKENS = 2048
FILLER = ("lighthouse keeper wrote log storm ships gulls long winter nights lamp turned above rocks northern coast "
          "harbor rope anchor tide moon sailor bread salt lantern fog bell island cliff wave cabin map compass "
          "river forest mountain village market bridge garden kitchen window letter journey morning evening").split()


@dataclass(frozen=True)
class RequestTiming:
    ttft_s: float
    inter_token_s: float
    num_tokens: int


def make_prompts(gguf: Path, count: int) -> list[str]:
    """`count` distinct user messages whose Gemma 3 prompt (template included) is exactly PROMPT_TOKENS tokens."""
    vocab = Llama(str(gguf), vocab_only=True, verbose=False)

    def num_tokens(text: str) -> int:
        rendered = f"<bos><start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"
        return len(vocab.tokenize(rendered.encode(), add_bos=False, special=True))

    prompts = []
    for index in range(count):
        # Words drawn anew for each prompt: no prefix, and no run of tokens, that a prompt cache could reuse.
        rng = random.Random(index)
        words = [f"{index}."]
        while num_tokens(" ".join(words)) < PROMPT_TOKENS:
            words.append(rng.choice(FILLER))
        while num_tokens(" ".join(words)) > PROMPT_TOKENS:
            words[-1] = words[-1][:-1] or words.pop()
        assert num_tokens(" ".join(words)) == PROMPT_TOKENS, index
        prompts.append(" ".join(words))
    return prompts


async def one_request(client: AsyncOpenAI, model: str, prompt: str) -> RequestTiming:
    started_s = time.perf_counter()
    stamps: list[float] = []
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=GENERATED_TOKENS, temperature=0,
        logit_bias=END_TOKENS_BANNED, stream=True, stream_options={"include_usage": True})  # type: ignore[arg-type]
    num_tokens = prompt_tokens = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
        if chunk.usage is not None:
            num_tokens, prompt_tokens = chunk.usage.completion_tokens, chunk.usage.prompt_tokens
    if num_tokens is None:  # llama_cpp.server sends no usage chunk; it streams one chunk per token
        num_tokens = len(stamps)
    if prompt_tokens is not None:
        assert prompt_tokens == PROMPT_TOKENS, f"the server saw a {prompt_tokens}-token prompt"
    return RequestTiming(stamps[0] - started_s, (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1), num_tokens)


async def run_level(base_url: str, model: str, prompts: list[str], concurrency: int, num_requests: int) -> dict[str, float]:
    """`prompts` holds at least concurrency × num_requests prompts, each used once: no server may answer from a
    prompt cache what the benchmark means to be new work."""
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=600)

    async def worker(worker_index: int) -> list[RequestTiming]:
        return [await one_request(client, model, prompts[worker_index * num_requests + i]) for i in range(num_requests)]

    async with client:
        started_s = time.perf_counter()
        timings = [t for ts in await asyncio.gather(*(worker(w) for w in range(concurrency))) for t in ts]
        wall_s = time.perf_counter() - started_s
    assert all(t.num_tokens == GENERATED_TOKENS for t in timings), [t.num_tokens for t in timings]
    ttfts = sorted(t.ttft_s for t in timings)
    return {
        "tok_per_s": sum(t.num_tokens for t in timings) / wall_s,
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
        "ttft_p95_ms": ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))] * 1000,
        "itl_p50_ms": statistics.median(t.inter_token_s for t in timings) * 1000,
    }


def bench_server(name: str, command: list[str], ready_path: str, model: str, port: int, prompts: list[str],
                 levels: list[int], num_requests: int) -> dict[int, dict[str, float]]:
    base_url = f"http://127.0.0.1:{port}"
    with running(command, base_url + ready_path):
        unused = iter(prompts)
        asyncio.run(run_level(base_url, model, [next(unused)], 1, 1))  # warm-up
        results = {}
        for level in levels:
            level_prompts = [next(unused) for _ in range(level * num_requests)]
            results[level] = asyncio.run(run_level(base_url, model, level_prompts, level, num_requests))
            r = results[level]
            print(f"{name:12} c={level}: {r['tok_per_s']:6.1f} tok/s  TTFT p50 {r['ttft_p50_ms']:6.0f} ms "
                  f"p95 {r['ttft_p95_ms']:6.0f} ms  ITL p50 {r['itl_p50_ms']:5.1f} ms", flush=True)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--requests", type=int, default=2, help="requests per worker at each level")
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--llama-server", type=Path, metavar="PATH",
                        help="also measure llama.cpp's own C++ llama-server binary (built separately; not shipped)")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    gguf = resolve_gguf(Catalog.from_dirs().resolve("gemma3:270m"))
    prompts = make_prompts(gguf, sum(levels) * args.requests + 1)  # a new prompt for every request
    print(f"Gemma 3 270M Q4_K_M, {args.threads} threads, prompt {PROMPT_TOKENS} tokens, {GENERATED_TOKENS} generated, "
          f"{args.requests} requests per worker", flush=True)

    port = free_port()
    faisca = bench_server(
        "faisca", [sys.executable, "-m", "faisca.cli.main", "serve", "--model", "gemma3:270m", "--port", str(port),
                   "--threads", str(args.threads), "--ctx-size", str(CONTEXT_TOKENS), "--max-num-seqs", str(max(levels))],
        "/health", "gemma3:270m", port, prompts, levels, args.requests)
    others: dict[str, dict[int, dict[str, float]]] = {}
    if args.llama_server:
        port = free_port()
        others["llama-server"] = bench_server(
            "llama-server", [str(args.llama_server), "-m", str(gguf), "-t", str(args.threads), "-tb", str(args.threads),
                             "-c", str(CONTEXT_TOKENS * max(levels)), "-np", str(max(levels)),
                             # the template as a file: with Jinja on, `--chat-template gemma` is a 1-word template
                             "--chat-template-file", str(GEMMA3_TEMPLATE),
                             # as faisca: no repacked weights (llama.cpp's AMX / repack buffers crash on some Xeons)
                             "--no-repack",
                             "--port", str(port)],
            "/health", "gemma", port, prompts, levels, args.requests)
    if not args.skip_peer:
        port = free_port()
        others["peer"] = bench_server(
            "peer", [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_threads", str(args.threads),
                     "--n_threads_batch", str(args.threads), "--n_ctx", str(CONTEXT_TOKENS), "--chat_format", "gemma",
                     # by default a new request cuts off the stream in progress; serialized is its usable mode
                     "--interrupt_requests", "False", "--port", str(port)],
            "/v1/models", "gemma", port, prompts, levels, args.requests)
    for name, results in others.items():
        for level in levels:
            ratio = faisca[level]["tok_per_s"] / results[level]["tok_per_s"]
            print(f"faisca/{name} c={level}: {ratio:.2f}x aggregate tok/s")


if __name__ == "__main__":
    main()
