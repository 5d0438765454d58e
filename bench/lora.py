"""What serving LoRA adapters costs: 4 concurrent streams all on the base, all on one adapter, and 2 + 2 on base and
adapter, same server, same run.

llama.cpp applies one adapter set to a whole `llama_decode`, so faisca batches one set a step and the sets take turns:
all on one adapter batches like the base (its cost is the adapter's own matmuls), while a mix splits each round into
two decodes. Prints, per mix, the aggregate completion tokens/s and its ratio to all-base, and the longest stall any
stream saw (the longest gap between two of its tokens). Rounds are interleaved (base, adapter, mixed, base, ...) so
drift cancels. The adapter is a random rank-4 one on attn_q, attn_v and ffn_down of every layer (tests/lora.py).

    .venv/bin/python bench/lora.py [--rounds 3] [--tokens 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faisca.catalog import Catalog  # noqa: E402
from faisca.engine.weights import resolve_gguf  # noqa: E402
from servers import free_port, running  # noqa: E402
from tests.lora import write_tiny_gemma3_lora  # noqa: E402

MIXES = {"base": ["gemma3:270m"] * 4, "adapter": ["tone"] * 4, "2 + 2": ["gemma3:270m", "tone"] * 2}


async def stream(client: httpx.AsyncClient, model: str, tokens: int, index: int) -> tuple[int, float]:
    """(completion tokens, longest gap between two tokens in seconds) of one greedy stream."""
    body = {"model": model, "messages": [{"role": "user", "content": f"Tell story number {index} about a lighthouse."}],
            "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True}
    count, last_s, longest_gap_s = 0, None, 0.0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {") or '"content":"' not in line:
                continue
            now_s = time.perf_counter()
            if last_s is not None:
                longest_gap_s = max(longest_gap_s, now_s - last_s)
            last_s = now_s
            count += 1
    return count, longest_gap_s


async def run_mix(base_url: str, models: list[str], tokens: int, round_index: int) -> tuple[float, float]:
    """(aggregate tokens/s, longest stall) of the mix's streams run together."""
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        started_s = time.perf_counter()
        results = await asyncio.gather(*(stream(client, model, tokens, 100 * round_index + index)
                                         for index, model in enumerate(models)))
        elapsed_s = time.perf_counter() - started_s
    return sum(count for count, _ in results) / elapsed_s, max(gap for _, gap in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    base_gguf = resolve_gguf(Catalog.from_dirs().resolve("gemma3:270m"))
    with tempfile.TemporaryDirectory() as directory:
        adapter = write_tiny_gemma3_lora(Path(directory) / "tone.gguf", base_gguf=base_gguf)
        port = free_port()
        command = [sys.executable, "-m", "faisca.cli.main", "serve", "--port", str(port), "--threads",
                   str(args.threads), "--lora", f"tone={adapter}"]
        with running(command, f"http://127.0.0.1:{port}/health"):
            base_url = f"http://127.0.0.1:{port}"
            asyncio.run(run_mix(base_url, MIXES["2 + 2"], 8, 99))  # warm-up
            rates: dict[str, list[float]] = {name: [] for name in MIXES}
            stalls: dict[str, list[float]] = {name: [] for name in MIXES}
            for round_index in range(args.rounds):
                for name, models in MIXES.items():
                    rate, stall = asyncio.run(run_mix(base_url, models, args.tokens, round_index))
                    rates[name].append(rate)
                    stalls[name].append(stall)
    base = statistics.median(rates["base"])
    print(f"4 streams x {args.tokens} tokens, {args.rounds} rounds, --threads {args.threads} (medians)")
    print(f"{'mix':<10}{'tok/s':>8}{'vs base':>9}{'longest stall ms':>18}")
    for name in MIXES:
        rate = statistics.median(rates[name])
        print(f"{name:<10}{rate:>8.1f}{rate / base:>9.2f}{max(stalls[name]) * 1000:>18.0f}")


if __name__ == "__main__":
    main()
