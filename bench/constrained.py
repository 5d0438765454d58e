"""What constrained decoding costs per token: the same engine, prompt and length, free vs. grammar-constrained.

Not a test. In process (no HTTP), Gemma 3 270M (262,144-token vocabulary), greedy, 128 tokens each with the
end-of-generation tokens banned: free text, then JSON constrained by llguidance to a schema whose long string
keeps the model writing. Prints ms per decoded token (first token excluded) and the ratio constrained/free.

    .venv/bin/python bench/constrained.py [--threads 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from faisca.catalog import Catalog
from faisca.engine.base import TokenOut
from faisca.chat.structured import json_grammar
from faisca.engine.llama_cpp import LlamaCppEngine
from faisca.engine.weights import resolve_gguf
from faisca.types import SamplingParams

NUM_TOKENS = 128
PROMPT = "<bos><start_of_turn>user\nWrite a long story about a lighthouse keeper, as JSON.<end_of_turn>\n<start_of_turn>model\n"
SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                                           "story": {"type": "string", "maxLength": 4000}},
          "required": ["title", "story"]}


async def ms_per_token(engine: LlamaCppEngine, *, constrained: bool) -> float:
    sampling = SamplingParams(temperature=0.0, logit_bias=((1, -100.0), (106, -100.0)))
    constraint = engine.compile_constraint(json_grammar(SCHEMA)) if constrained else None
    stamps = []
    async for event in engine.generate(engine.encode_prompt(PROMPT), sampling, NUM_TOKENS, constraint):
        if isinstance(event, TokenOut):
            stamps.append(time.perf_counter())
    assert len(stamps) == NUM_TOKENS, len(stamps)
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    engine = LlamaCppEngine.load(resolve_gguf(Catalog.from_dirs().resolve("gemma3:270m")), name="bench",
                                 max_context_tokens=1024, num_threads=args.threads)
    asyncio.run(ms_per_token(engine, constrained=True))  # warm-up
    free_runs, constrained_runs = [], []
    for _ in range(args.runs):  # interleaved, so that drift in the machine's speed hits both alike
        free_runs.append(asyncio.run(ms_per_token(engine, constrained=False)))
        constrained_runs.append(asyncio.run(ms_per_token(engine, constrained=True)))
    free, constrained = statistics.median(free_runs), statistics.median(constrained_runs)
    print(f"Gemma 3 270M Q4_K_M, {args.threads} threads, {NUM_TOKENS} tokens greedy, median of {args.runs}")
    print(f"free        {free:6.2f} ms/token")
    print(f"constrained {constrained:6.2f} ms/token")
    print(f"constrained/free: {constrained / free:.3f}")
    asyncio.run(engine.close())


if __name__ == "__main__":
    main()
