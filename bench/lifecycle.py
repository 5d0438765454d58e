"""What loading on demand costs: the first request to each embedded model (its load included) against the same
request once it is loaded, and what the lifecycle bookkeeping (a lease per request, the idle timer) costs a request
in steady state.

1. For each embedded model, a fresh `faisca serve` with it named by `--model` (loaded before /health is 200), then
   one with no `--model`: a one-token chat completion timed from the client, first (on demand: it waits for the
   load), then `--repeat` more times; the load itself from `/metrics` (`faisca_model_load_seconds`). The GGUF stays in
   the page cache between servers, as it would on a box serving it.
2. In process, the bookkeeping each request does on a loaded model: `registry.acquire` + `lease.release` (the lease,
   cancelling and re-arming the idle timer), timed over many calls.

    .venv/bin/python bench/lifecycle.py [--repeat 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faisca.catalog import Catalog  # noqa: E402
from faisca.registry import ModelRegistry  # noqa: E402
from servers import free_port, running  # noqa: E402
from tests.unit.scripted import ScriptedEngine  # noqa: E402

MODELS = {"gemma3:270m": "google-gemma-3-270m", "smollm2": "huggingfacetb-smollm2-135m-instruct"}


def one_token(base_url: str, model: str) -> float:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 1, "temperature": 0}
    started_s = time.perf_counter()
    httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=600).raise_for_status()
    return time.perf_counter() - started_s


def first_request(alias: str, threads: int, repeat: int, *, pinned: bool) -> tuple[float, float, float]:
    """(first request s, load s, median loaded request s) on a fresh server; `pinned`: the model named with --model
    (loaded before /health is 200), else loaded by the first request."""
    port = free_port()
    command = [sys.executable, "-m", "faisca.cli.main", "serve", "--port", str(port), "--threads", str(threads),
               "--ctx-size", "2048", *(["--model", alias] if pinned else [])]
    with running(command, f"http://127.0.0.1:{port}/health"):
        base_url = f"http://127.0.0.1:{port}"
        first_s = one_token(base_url, alias)
        warm_s = statistics.median(one_token(base_url, alias) for _ in range(repeat))
        metrics = httpx.get(f"{base_url}/metrics").text
        load_s = float(re.search(rf'faisca_model_load_seconds_sum{{model="{MODELS[alias]}"}} (\S+)', metrics)[1])
    return first_s, load_s, warm_s


def first_requests(repeat: int, threads: int) -> None:
    print(f"{'model':<14} {'server':<10} {'first request s':>16} {'load s':>8} {'loaded request ms':>18}")
    for alias in MODELS:
        for pinned in (True, False):
            first_s, load_s, warm_s = first_request(alias, threads, repeat, pinned=pinned)
            print(f"{alias:<14} {'--model' if pinned else 'on demand':<10} {first_s:>16.2f} {load_s:>8.2f} "
                  f"{warm_s * 1000:>18.1f}")


async def bookkeeping(num_calls: int) -> float:
    """Seconds per acquire + release on a loaded model (the work each request adds)."""
    catalog = Catalog.from_dirs()
    registry = ModelRegistry(catalog, (), lambda card: ScriptedEngine(["a"]))
    card = catalog.resolve("smollm2")
    (await registry.acquire(card)).release()  # loaded
    started_s = time.perf_counter()
    for _ in range(num_calls):
        (await registry.acquire(card)).release()
    elapsed_s = time.perf_counter() - started_s
    await registry.close()
    return elapsed_s / num_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    first_requests(args.repeat, args.threads)
    per_call_s = statistics.median(asyncio.run(bookkeeping(20_000)) for _ in range(5))
    print(f"\nbookkeeping per request (acquire + release, loaded model): {per_call_s * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
