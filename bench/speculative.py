"""Speculative decoding: single-stream decode speed with and without prompt lookup (`--spec ngram`).

Not a test. faisca's LlamaCppEngine in process (no HTTP), greedy, on two tasks:
  edit   a paragraph with typos to correct: the answer repeats most of the prompt (where lookup pays),
  chat   an open question: little to copy (what speculation costs when it does not pay),
on SmolLM2 135M Instruct (default; it follows the instruction, and its answers end by themselves) or Gemma 3 270M
(`--model gemma3:270m`: a base model, which echoes the prompt and loops, so both tasks become copying),
each without speculation, with prompt lookup at `--draft-max` 4 and 8, and with a draft model at 4: the model
drafting for itself (the only pair of one vocabulary here: no speed-up is possible, since the draft costs what the
target does; it shows the machinery's cost at an acceptance near 100 %). Prints decode tok/s (first to last token), the speed-up,
the acceptance rate (accepted / drafted tokens), and checks the text is the same.

    .venv/bin/python bench/speculative.py [--threads 2] [--tokens 400] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from faisca.catalog import Catalog
from faisca.engine.base import TokenOut
from faisca.engine.llama_cpp import LlamaCppEngine
from faisca.engine.speculative import SpeculationConfig
from faisca.engine.weights import resolve_gguf
from faisca.types import SamplingParams

EDIT = ("Correct the spelling mistakes in this paragraph and write it out again in full:\n\n"
        "The lighthouse keeper climed the stairs every evening at sunset. He lit the lamp, cleaned the "
        "glass, and wrote the wether in his log book. On stormy nights he stayed awake untill dawn, watching "
        "the ships pass safely beyond the rocks. In the morning he walked down to the village to buy bread, "
        "and the children asked him for storys about the sea.")
CHAT = "Why do people enjoy travelling to new places? Answer in a few paragraphs."
TASKS = {"edit": EDIT, "chat": CHAT}
CONTEXT_TOKENS = 2048


TEMPLATES = {  # the two models' chat formats, written out (the bench skips faisca's template rendering)
    "gemma3:270m": "<bos><start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n",
    "smollm2": "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
}


def measure(engine: LlamaCppEngine, template: str, prompt_text: str, num_tokens: int) -> tuple[float, str]:
    prompt = engine.encode_prompt(template.format(prompt_text))

    async def run() -> tuple[float, str]:
        stamps, text = [], []
        async for event in engine.generate(prompt, SamplingParams(temperature=0.0), num_tokens):
            if isinstance(event, TokenOut):
                stamps.append(time.perf_counter())
                text.append(event.text)
        return (len(stamps) - 1) / (stamps[-1] - stamps[0]), "".join(text)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--tokens", type=int, default=400)  # at most: each answer ends where the model ends it
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", choices=sorted(TEMPLATES), default="smollm2")
    args = parser.parse_args()
    gguf = resolve_gguf(Catalog.from_dirs().resolve(args.model))
    template = TEMPLATES[args.model]
    print(f"load average at start: {os.getloadavg()}")
    baseline: dict[str, tuple[float, str]] = {}
    for method, draft_max in ((None, None), ("ngram", 4), ("ngram", 8), ("draft", 4)):
        speculation = None if method is None else SpeculationConfig(method=method, max_draft_tokens=draft_max)
        engine = LlamaCppEngine.load(gguf, name="bench", max_context_tokens=CONTEXT_TOKENS, num_threads=args.threads,
                                     speculation=speculation, draft_path=gguf if method == "draft" else None)
        try:
            for task, prompt in TASKS.items():
                measure(engine, template, prompt, 16)  # warm-up
                before = engine.stats
                runs = [measure(engine, template, prompt, args.tokens) for _ in range(args.runs)]
                after = engine.stats
                speed, text = statistics.median(r[0] for r in runs), runs[0][1]
                drafted = after.num_draft_tokens - before.num_draft_tokens
                accepted = after.num_accepted_tokens - before.num_accepted_tokens
                label = "off" if method is None else f"{method}, draft-max {draft_max}"
                if draft_max is None:
                    baseline[task] = (speed, text)
                    print(f"{task:5} {label:22} {speed:6.1f} tok/s  ({len(engine.tokenize(text, add_special=False, parse_special=False))} tokens: {text[:60]!r}...)")
                    continue
                same = "same text" if text == baseline[task][1] else "TEXT DIFFERS"
                rate = accepted / drafted if drafted else 0.0
                print(f"{task:5} {label:22} {speed:6.1f} tok/s  x{speed / baseline[task][0]:.2f}  "
                      f"accepted {accepted}/{drafted} drafts ({rate:.0%})  {same}")
        finally:
            asyncio.run(engine.close())
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
