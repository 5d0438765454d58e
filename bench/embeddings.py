"""Embedding throughput: 64 short texts in one request (batched by the engine) against the same texts one request at
a time, and against llama-cpp-python's own `Llama.create_embedding` on the same GGUF, threads and pooling (mean), same
run.

faisca is driven over HTTP (`POST /v1/embeddings`, floats); llama-cpp-python in a process of its own (its weights loaded
without repacked/AMX layouts, which crash llama.cpp 0.3.36 on this CPU, as in faisca), timed around the calls only. Prints inputs per second, median of the rounds, and
the largest difference between faisca's and llama-cpp-python's normalized vectors for the same text.

    .venv/bin/python bench/embeddings.py [--rounds 3] [--threads 2] [--model gemma3:270m]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faisca.catalog import Catalog  # noqa: E402
from faisca.engine.weights import resolve_gguf  # noqa: E402
from servers import free_port, running  # noqa: E402

TEXTS = [f"Note {index}: the {topic} meeting moved to {day}." for index, (topic, day) in enumerate(
    (topic, day) for topic in ("budget", "design", "hiring", "launch", "safety", "travel", "support", "research")
    for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "noon"))]
CONTEXT_TOKENS = 2048

LLAMA_CPP_PYTHON = """
import json, sys, time
import llama_cpp, llama_cpp.llama_cpp as low
default_params = low.llama_model_default_params
def plain_params():  # no repacked/AMX weight layouts: with them llama.cpp 0.3.36 segfaults on this CPU (as faisca)
    params = default_params(); params.use_extra_bufts = False; return params
low.llama_model_default_params = plain_params
gguf, threads, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
texts = json.loads(sys.stdin.read())
llama = llama_cpp.Llama(gguf, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, n_ctx=%d,
                        n_batch=%d, n_ubatch=%d, n_threads=threads, n_threads_batch=threads, verbose=False)
batched, single = [], []
for _ in range(rounds):
    started = time.perf_counter(); result = llama.create_embedding(texts); batched.append(time.perf_counter() - started)
    started = time.perf_counter()
    for text in texts:
        llama.create_embedding(text)
    single.append(time.perf_counter() - started)
print(json.dumps({"batched_s": batched, "single_s": single, "first": result["data"][0]["embedding"]}))
""" % (CONTEXT_TOKENS, CONTEXT_TOKENS, CONTEXT_TOKENS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="gemma3:270m")
    args = parser.parse_args()
    gguf = resolve_gguf(Catalog.from_dirs().resolve(args.model))
    port = free_port()
    command = [sys.executable, "-m", "faisca.cli.main", "serve", "--port", str(port), "--threads", str(args.threads),
               "--ctx-size", str(CONTEXT_TOKENS), "--model", args.model]
    batched_s, single_s = [], []
    with running(command, f"http://127.0.0.1:{port}/health"), httpx.Client(timeout=600) as client:
        url = f"http://127.0.0.1:{port}/v1/embeddings"

        def embed(inputs: list[str] | str) -> list[list[float]]:
            response = client.post(url, json={"model": args.model, "input": inputs, "encoding_format": "float"})
            response.raise_for_status()
            return [item["embedding"] for item in response.json()["data"]]

        embed(TEXTS[:2])  # makes the embedding context
        for _ in range(args.rounds):
            started = time.perf_counter()
            vectors = embed(TEXTS)
            batched_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            for text in TEXTS:
                embed(text)
            single_s.append(time.perf_counter() - started)
    theirs = subprocess.run([sys.executable, "-c", LLAMA_CPP_PYTHON, str(gguf), str(args.threads), str(args.rounds)],
                            input=json.dumps(TEXTS), capture_output=True, text=True)
    print(f"{args.model}, {len(TEXTS)} texts of {min(map(len, TEXTS))}-{max(map(len, TEXTS))} characters, "
          f"{args.threads} threads, {args.rounds} rounds (median)")

    def line(name: str, times: list[float]) -> None:
        print(f"  {name:<44} {len(TEXTS) / statistics.median(times):7.1f} inputs/s")

    line("faisca, one request of 64 (batched)", batched_s)
    line("faisca, 64 requests one at a time", single_s)
    if theirs.returncode != 0:
        print(f"  llama-cpp-python failed (exit {theirs.returncode}): {theirs.stderr.strip()[-300:]}")
        return
    result = json.loads(theirs.stdout.strip().splitlines()[-1])
    line("llama-cpp-python create_embedding(64 texts)", result["batched_s"])
    line("llama-cpp-python create_embedding, one at a time", result["single_s"])
    ours = np.array(vectors[0])
    their = np.array(result["first"]) / np.linalg.norm(result["first"])
    print(f"  same text, faisca vs llama-cpp-python: cosine {float(ours @ their):.7f}, "
          f"max |difference| {float(np.abs(ours - their).max()):.2e}")


if __name__ == "__main__":
    main()
