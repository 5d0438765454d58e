"""What log-probabilities cost a stream: faisca vs. `python -m llama_cpp.server`, same GGUF, threads and prompt.

Not a test. One greedy stream of `--tokens` tokens, streamed with the official openai client, without logprobs
and with `logprobs: true` and `top_logprobs` 0, 5 and 20; prints decode tok/s (median of `--runs`) per server and
setting, the slowdown each setting costs against the same server without logprobs, and faisca/peer ratios. The
peer needs `pip install -r bench/requirements.txt` (it keeps every position's logits: its default `logits_all`).

    .venv/bin/python bench/logprobs.py [--threads 2] [--tokens 128] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from openai import OpenAI

from faisca.catalog import Catalog
from faisca.engine.weights import resolve_gguf
from servers import faisca_command, free_port, llama_cpp_server_command, running
from single_stream import CONTEXT_TOKENS, PROMPT

SETTINGS: dict[str, dict[str, object]] = {
    "off": {},
    "top 0": {"logprobs": True, "top_logprobs": 0},
    "top 5": {"logprobs": True, "top_logprobs": 5},
    "top 20": {"logprobs": True, "top_logprobs": 20},
}


def decode_tok_per_s(base_url: str, model: str, num_tokens: int, extra: dict[str, object]) -> float:
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=600)
    stamps = []
    num_entries = 0
    for chunk in client.chat.completions.create(model=model, stream=True, temperature=0, max_tokens=num_tokens,
                                                messages=[{"role": "user", "content": PROMPT}], **extra):  # type: ignore[call-overload]
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            num_entries += len(chunk.choices[0].logprobs.content)
    if extra and num_entries == 0:
        raise RuntimeError(f"{base_url} sent no logprobs for {extra}")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def measure(base_url: str, model: str, args: argparse.Namespace) -> dict[str, float]:
    decode_tok_per_s(base_url, model, 8, {})  # warm-up
    return {name: statistics.median(decode_tok_per_s(base_url, model, args.tokens, extra) for _ in range(args.runs))
            for name, extra in SETTINGS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    gguf = resolve_gguf(Catalog.from_dirs().resolve("gemma3:270m"))
    rows: dict[str, dict[str, float]] = {}

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with running(faisca_command(port, threads=args.threads, context_tokens=CONTEXT_TOKENS), f"{base_url}/health"):
        rows["faisca"] = measure(base_url, "gemma3:270m", args)

    port = free_port()
    peer_url = f"http://127.0.0.1:{port}"
    try:
        with running(llama_cpp_server_command(gguf, port, threads=args.threads, context_tokens=CONTEXT_TOKENS),
                     f"{peer_url}/v1/models"):
            rows["peer"] = measure(peer_url, "gemma", args)
    except RuntimeError as exc:
        print(f"peer skipped: {exc} (pip install -r bench/requirements.txt)")

    print(f"Gemma 3 270M Q4_K_M, {args.threads} threads, {args.tokens} tokens greedy, decode tok/s, median of {args.runs}")
    print(f"{'':8}" + "".join(f"{name:>10}" for name in SETTINGS))
    for server, speeds in rows.items():
        print(f"{server:8}" + "".join(f"{speeds[name]:10.1f}" for name in SETTINGS))
    for server, speeds in rows.items():
        print(f"{server} with / without logprobs: " + ", ".join(
            f"{name} {speeds[name] / speeds['off']:.2f}" for name in SETTINGS if name != "off"))
    if "peer" in rows:
        print("faisca/peer: " + ", ".join(f"{name} {rows['faisca'][name] / rows['peer'][name]:.2f}" for name in SETTINGS))


if __name__ == "__main__":
    main()
