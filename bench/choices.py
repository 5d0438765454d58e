"""What `n` choices cost: one request with n=4 against one with n=1, on this checkout and on a baseline checkout.

Not a test. Starts `faisca serve` from each source tree in turn (the baseline: any other checkout's `src`, e.g. a
`git worktree` of an older commit, run with this venv), asks for 64 tokens with end-of-generation banned at n=1 and
n=4 (best of `--runs` wall times), and prints the aggregate tok/s and the n=4 / n=1 wall-time ratio of each, then
this/baseline at n=4.

    git worktree add /tmp/baseline <commit>
    .venv/bin/python bench/choices.py --baseline /tmp/baseline/src [--threads 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from openai import OpenAI

from servers import faisca_command, free_port

MESSAGES = [{"role": "user", "content": "Write a short poem about the boats in the harbor."}]
END_TOKENS_BANNED = {"1": -100, "106": -100}  # Gemma 3's <eos> and <end_of_turn>: every choice runs 64 tokens
CONTEXT_TOKENS = 2048


def wall_s(client: OpenAI, num_choices: int) -> float:
    started_s = time.perf_counter()
    completion = client.chat.completions.create(model="gemma3:270m", messages=MESSAGES, max_tokens=64, n=num_choices,  # type: ignore[arg-type]
                                                temperature=0.8, seed=1, logit_bias=END_TOKENS_BANNED)
    assert completion.usage is not None and completion.usage.completion_tokens == 64 * num_choices
    return time.perf_counter() - started_s


def measure(src: Path, args: argparse.Namespace) -> dict[int, float]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src)}
    process = subprocess.Popen(faisca_command(port, threads=args.threads, context_tokens=CONTEXT_TOKENS), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
        for _ in range(240):
            try:
                client.models.list()
                client.chat.completions.create(model="gemma3:270m", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
                break
            except Exception:  # noqa: BLE001 - still starting
                time.sleep(0.5)
        return {n: min(wall_s(client, n) for _ in range(args.runs)) for n in (1, 4)}
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout's src directory")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = {"this": measure(Path(__file__).parents[1] / "src", args), "baseline": measure(args.baseline, args)}
    print(f"Gemma 3 270M Q4_K_M, {args.threads} threads, 64 tokens per choice, best of {args.runs}")
    for name, times in rows.items():
        print(f"{name:9} n=1 {times[1]:5.2f} s ({64 / times[1]:5.1f} tok/s)   n=4 {times[4]:5.2f} s "
              f"({256 / times[4]:5.1f} tok/s)   n=4/n=1 wall {times[4] / times[1]:.2f}")
    print(f"this/baseline n=4 wall: {rows['this'][4] / rows['baseline'][4]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
