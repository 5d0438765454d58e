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

With `--big-target`, instead: a draft model that pays. The target is Gemma 3 270M plus `--layers` extra layers that
add nothing (noise 0: the 270M's logits bit for bit, at the cost of a model ~6x bigger here) or noise (which lowers
the acceptance rate; past noise ~1 the target's text degenerates into loops), written by bench/big_target.py; the
draft is the 270M itself. On two raw-text continuations (the 270M is a base model: a list of countries and a Q&A,
prompts it continues with new lines rather than echoing them), at each `--noise` level: the target without
speculation, with the 270M drafting (draft-max 4 and 8), and at noise 0 with prompt lookup; the speed-up against
the acceptance rate (accepted / drafted tokens: faisca drafts less after a rejection, llama-server always drafts
draft-max), and the text checked against the same target without speculation. `--llama-server PATH` measures
llama.cpp's C++ server the same way (HTTP /completion, its own draft model options), with and without the draft.

    .venv/bin/python bench/speculative.py --big-target [--layers 240] [--noise 0,0.5,1,2] [--llama-server PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from faisca.catalog import Catalog
from faisca.engine.base import TokenOut
from faisca.engine.llama_cpp import LlamaCppEngine
from faisca.engine.speculative import SpeculationConfig
from faisca.engine.weights import resolve_gguf
from faisca.types import SamplingParams
from big_target import big_target, embedded_gguf
from servers import free_port, running

EDIT = ("Correct the spelling mistakes in this paragraph and write it out again in full:\n\n"
        "The lighthouse keeper climed the stairs every evening at sunset. He lit the lamp, cleaned the "
        "glass, and wrote the wether in his log book. On stormy nights he stayed awake untill dawn, watching "
        "the ships pass safely beyond the rocks. In the morning he walked down to the village to buy bread, "
        "and the children asked him for storys about the sea.")
CHAT = "Why do people enjoy travelling to new places? Answer in a few paragraphs."
TASKS = {"edit": EDIT, "chat": CHAT}
# raw text for the base model to continue (with --big-target): varied lines, not a verbatim loop in 128 tokens
BIG_TASKS = {
    "list": ("<bos>Countries and their capitals, with one fact about each:\n1. France: Paris, home of the Eiffel "
             "Tower.\n2. Japan: Tokyo, the largest metropolitan area in the world.\n3."),
    "qa": "<bos>Q: What causes the seasons on Earth?\nA:",
}
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


@dataclass(frozen=True)
class Result:
    speed: float  # decode tok/s, first to last token, median of the runs
    text: str
    num_tokens: int
    accepted: int  # drafts accepted, over the runs
    drafted: int
    prompt: tuple[int, ...]

    def versus(self, baseline: Result) -> str:
        rate = self.accepted / self.drafted if self.drafted else 0.0
        same = "same text" if self.text == baseline.text else "TEXT DIFFERS"
        return (f"{self.speed:6.1f} tok/s  x{self.speed / baseline.speed:.2f}  "
                f"accepted {self.accepted}/{self.drafted} drafts ({rate:.0%})  {same}")


def bench_engine(gguf: Path, tasks: dict[str, str], template: str, *, threads: int, num_tokens: int, runs: int,
                 speculation: SpeculationConfig | None, draft_path: Path | None) -> dict[str, Result]:
    """Each task's decode speed in faisca's engine, after a 16-token warm-up."""
    engine = LlamaCppEngine.load(gguf, name="bench", max_context_tokens=CONTEXT_TOKENS, num_threads=threads,
                                 speculation=speculation, draft_path=draft_path)
    try:
        results = {}
        for task, prompt in tasks.items():
            measure(engine, template, prompt, 16)  # warm-up
            before = engine.stats
            timed = [measure(engine, template, prompt, num_tokens) for _ in range(runs)]
            after = engine.stats
            text = timed[0][1]
            results[task] = Result(statistics.median(r[0] for r in timed), text,
                                   len(engine.tokenize(text, add_special=False, parse_special=False)),
                                   after.num_accepted_tokens - before.num_accepted_tokens,
                                   after.num_draft_tokens - before.num_draft_tokens,
                                   engine.encode_prompt(template.format(prompt)).tokens)
        return results
    finally:
        asyncio.run(engine.close())


def bench_llama_server(binary: Path, target: Path, draft: Path | None, draft_max: int,
                       prompts: dict[str, tuple[int, ...]], *, threads: int, num_tokens: int,
                       runs: int) -> dict[str, Result]:
    """The same, through llama.cpp's C++ server (its /completion, the prompt as token ids, greedy), with faisca's
    context settings: no repacked weights (as faisca's use_extra_bufts=False), flash attention, F16 K and Q8_0 V
    caches, full SWA cache, no tiled matmul (GGML_CPU_TILED_MM=0, inherited from this process, where faisca's engine
    set it); speed from its own timings ((predicted_n - 1) / predicted_ms, as faisca's first to last token)."""
    port = free_port()
    command = [str(binary), "-m", str(target), "-t", str(threads), "-tb", str(threads), "-c", str(CONTEXT_TOKENS),
               "-np", "1", "--no-repack", "-fa", "on", "-ctk", "f16", "-ctv", "q8_0", "--swa-full", "--no-webui",
               "--port", str(port)]
    if draft is not None:
        command += ["-md", str(draft), "--spec-type", "draft-simple", "--spec-draft-n-max", str(draft_max),
                    "--spec-draft-n-min", "0"]
    url = f"http://127.0.0.1:{port}"

    def complete(prompt: tuple[int, ...], n: int) -> tuple[float, str, int, int]:
        response = httpx.post(f"{url}/completion", timeout=600,
                              json={"prompt": list(prompt), "n_predict": n, "temperature": 0.0})
        response.raise_for_status()
        body = response.json()
        timings = body["timings"]
        return ((timings["predicted_n"] - 1) / (timings["predicted_ms"] / 1000), body["content"],
                timings.get("draft_n_accepted", 0), timings.get("draft_n", 0))

    with running(command, f"{url}/health", timeout_s=300):
        results = {}
        for task, prompt in prompts.items():
            complete(prompt, 16)  # warm-up
            timed = [complete(prompt, num_tokens) for _ in range(runs)]
            results[task] = Result(statistics.median(r[0] for r in timed), timed[0][1], 0,
                                   sum(r[2] for r in timed), sum(r[3] for r in timed), prompt)
        return results


def big_target_bench(args: argparse.Namespace) -> None:
    small = embedded_gguf()
    noises = [float(noise) for noise in args.noise.split(",")]
    options = {"threads": args.threads, "num_tokens": args.big_tokens, "runs": args.runs}
    started_s = time.monotonic()
    alone = bench_engine(small, BIG_TASKS, "{}", speculation=None, draft_path=None, **options)
    summary: list[str] = []
    for noise in noises:
        target = big_target(args.layers, noise)
        configs: list[tuple[Literal["ngram", "draft"] | None, int]] = [(None, 0), ("draft", 4), ("draft", 8)]
        if noise == 0:
            configs.append(("ngram", 4))
        baseline: dict[str, Result] = {}
        for method, draft_max in configs:
            speculation = None if method is None else SpeculationConfig(method=method, max_draft_tokens=draft_max)
            results = bench_engine(target, BIG_TASKS, "{}", speculation=speculation,
                                   draft_path=small if method == "draft" else None, **options)
            for task, result in results.items():
                if method is None:
                    baseline[task] = result
                    same = "the 270M's text" if result.text == alone[task].text else "not the 270M's text"
                    print(f"noise {noise:<4g} {task:4} off                   {result.speed:6.1f} tok/s  "
                          f"(270M alone {alone[task].speed:.1f}: x{alone[task].speed / result.speed:.1f} slower; "
                          f"{result.num_tokens} tokens, {same}: {result.text[:50]!r}...)", flush=True)
                else:
                    line = result.versus(baseline[task])
                    print(f"noise {noise:<4g} {task:4} faisca {method}, draft-max {draft_max:<2} {line}", flush=True)
                    summary.append(f"{noise:5g}  {task:4}  faisca        {method:5} {draft_max:2}   {line}")
        if args.llama_server:
            prompts = {task: result.prompt for task, result in baseline.items()}
            peer: dict[str, Result] = {}
            for draft_max in (0, 4, 8):
                results = bench_llama_server(args.llama_server, target, small if draft_max else None, draft_max,
                                             prompts, **options)
                for task, result in results.items():
                    if not draft_max:
                        peer[task] = result
                        same = "faisca's text" if result.text == baseline[task].text else "not faisca's text"
                        print(f"noise {noise:<4g} {task:4} llama-server off             {result.speed:6.1f} tok/s  "
                              f"(faisca/llama-server x{baseline[task].speed / result.speed:.2f}; {same})", flush=True)
                    else:
                        line = result.versus(peer[task])
                        print(f"noise {noise:<4g} {task:4} llama-server draft-max {draft_max:<2}  {line}", flush=True)
                        summary.append(f"{noise:5g}  {task:4}  llama-server  draft {draft_max:2}   {line}")
    print(f"\nspeed-up against the same target without speculation, {args.layers} extra layers, "
          f"{args.big_tokens} tokens at most, median of {args.runs}:")
    print("noise  task  server        method      tok/s   speed-up  acceptance")
    print("\n".join(summary))
    print(f"took {time.monotonic() - started_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--tokens", type=int, default=400)  # at most: each answer ends where the model ends it
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", choices=sorted(TEMPLATES), default="smollm2")
    parser.add_argument("--big-target", action="store_true",
                        help="instead: the 270M drafting for a target that costs like a bigger model")
    parser.add_argument("--layers", type=int, default=240, help="--big-target: extra layers in the target")
    parser.add_argument("--noise", default="0,0.5,1,2", help="--big-target: noise levels (bench/big_target.py)")
    parser.add_argument("--big-tokens", type=int, default=128, help="--big-target: tokens per answer at most")
    parser.add_argument("--llama-server", type=Path, metavar="PATH",
                        help="--big-target: also measure llama.cpp's C++ llama-server binary (built separately)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    if args.big_target:
        big_target_bench(args)
        print(f"load average at end: {os.getloadavg()}")
        return
    gguf = resolve_gguf(Catalog.from_dirs().resolve(args.model))
    template = TEMPLATES[args.model]
    baseline: dict[str, Result] = {}
    for method, draft_max in ((None, None), ("ngram", 4), ("ngram", 8), ("draft", 4)):
        speculation = None if method is None else SpeculationConfig(method=method, max_draft_tokens=draft_max)
        results = bench_engine(gguf, TASKS, template, threads=args.threads, num_tokens=args.tokens, runs=args.runs,
                               speculation=speculation, draft_path=gguf if method == "draft" else None)
        for task, result in results.items():
            label = "off" if method is None else f"{method}, draft-max {draft_max}"
            if method is None:
                baseline[task] = result
                print(f"{task:5} {label:22} {result.speed:6.1f} tok/s  ({result.num_tokens} tokens: {result.text[:60]!r}...)")
            else:
                print(f"{task:5} {label:22} {result.versus(baseline[task])}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
