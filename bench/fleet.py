"""What the fleet front door costs, and how fast it routes around a replica killed with SIGKILL.

Not a test. Two scenarios, one `faisca serve` per replica (embedded Gemma 3 270M) and a front
`faisca serve --upstream gemma3:270m=http://127.0.0.1:R/v1`, all on this box:

- overhead: one replica, one front over it. `--concurrency` clients, each making `--requests` streamed chats in a
  row (distinct prompts, `--max-tokens` tokens with `ignore_eos`, temperature 0.7), sent directly to the replica
  and through the front, interleaved (direct, front, front, direct, ... for `--rounds` rounds) so drift cancels.
  After each phase, `--alone` requests of one token go one at a time: TTFT with nothing else running. Prints
  aggregate completion tok/s and TTFT p50/p90 for each, the ratio front/direct and the added TTFT p50. The front's own CPU competes with the replica's on a small box: that is part of what it costs.
- failover: a front over two replicas; `--failover-clients` clients send short streamed chats (4 tokens) in a
  loop; one replica gets SIGKILL, is restarted `--restart-after` seconds later. Every request's start, end and
  outcome is kept: prints how many failed, when the last failure was (after the kill), whether any request that
  started after the kill failed, and when the front put the restarted replica back in rotation
  (`faisca_upstream_up` on its `/metrics`, polled every 50 ms).

    .venv/bin/python bench/fleet.py [--rounds 4] [--concurrency 4] [--max-tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx

from servers import faisca_command, free_port, running

MODEL = "gemma3:270m"
CONTEXT_TOKENS = 2048
_prompt_numbers = itertools.count()


def replica_command(port: int, threads: int, max_num_seqs: int) -> list[str]:
    return faisca_command(port, threads=threads, context_tokens=CONTEXT_TOKENS) + ["--max-num-seqs", str(max_num_seqs)]


def front_command(port: int, replica_ports: list[int]) -> list[str]:
    upstreams = [arg for p in replica_ports for arg in ("--upstream", f"{MODEL}=http://127.0.0.1:{p}/v1")]
    return [sys.executable, "-m", "faisca.cli.main", "serve", "--port", str(port), *upstreams]


def replica_key(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"


def upstream_up(metrics_text: str) -> dict[str, bool]:
    """`faisca_upstream_up` per replica key, from a `/metrics` answer."""
    pattern = r'^faisca_upstream_up\{[^}]*replica="([^"]+)"[^}]*\}\s+(\S+)$'
    return {key: float(value) == 1 for key, value in re.findall(pattern, metrics_text, re.MULTILINE)}


def wait_until_all_up(front_url: str, keys: list[str], timeout_s: float = 30) -> None:
    deadline_s = time.monotonic() + timeout_s
    while not all(upstream_up(httpx.get(f"{front_url}/metrics", timeout=5).text).get(key) for key in keys):
        if time.monotonic() > deadline_s:
            raise RuntimeError("the front did not see every replica up")
        time.sleep(0.1)


def chat_body(max_tokens: int) -> dict[str, object]:
    number = next(_prompt_numbers)  # every request its own prompt: nothing for a prompt cache to reuse
    return {"model": MODEL, "stream": True, "max_tokens": max_tokens, "temperature": 0.7, "ignore_eos": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Request {number}: write a short story about lighthouse "
                                                     f"keeper number {number * 7919 % 10007} and a storm."}]}


@dataclass(frozen=True)
class Outcome:
    started_s: float  # monotonic
    ended_s: float
    first_token_s: float | None
    num_tokens: int
    error: str | None  # None: a complete answer of the requested length


async def stream_chat(client: httpx.AsyncClient, base_url: str, max_tokens: int) -> Outcome:
    """One streamed chat; never raises: a failure is its outcome's `error`."""
    started_s = time.perf_counter()
    first_token_s = None
    num_tokens = 0
    error = None
    try:
        async with client.stream("POST", f"{base_url}/v1/chat/completions", json=chat_body(max_tokens)) as response:
            if response.status_code != 200:
                error = f"HTTP {response.status_code}"
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[len("data: "):])
                    if "error" in chunk:
                        error = "in-band error"
                    elif chunk.get("usage"):
                        num_tokens = chunk["usage"]["completion_tokens"]
                    elif first_token_s is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        first_token_s = time.perf_counter()
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    if error is None and num_tokens != max_tokens:
        error = f"{num_tokens} of {max_tokens} tokens"
    return Outcome(started_s, time.perf_counter(), first_token_s, num_tokens, error)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# --- overhead -------------------------------------------------------------------------------------------------------

@dataclass
class Tally:
    num_tokens: int = 0
    wall_s: float = 0.0
    ttfts_s: list[float] = field(default_factory=list)
    alone_ttfts_s: list[float] = field(default_factory=list)  # one request at a time, nothing else running
    phase_tok_per_s: list[float] = field(default_factory=list)

    def add(self, outcomes: list[Outcome], wall_s: float) -> None:
        failed = [o.error for o in outcomes if o.error is not None]
        assert not failed, failed
        self.num_tokens += sum(o.num_tokens for o in outcomes)
        self.wall_s += wall_s
        self.phase_tok_per_s.append(sum(o.num_tokens for o in outcomes) / wall_s)
        self.ttfts_s += [o.first_token_s - o.started_s for o in outcomes if o.first_token_s is not None]

    @property
    def tok_per_s(self) -> float:
        return self.num_tokens / self.wall_s


async def load(base_url: str, *, concurrency: int, num_requests: int, max_tokens: int) -> tuple[list[Outcome], float]:
    """`concurrency` clients, each making `num_requests` streamed chats in a row; their outcomes and the wall time."""
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def worker() -> list[Outcome]:
            return [await stream_chat(client, base_url, max_tokens) for _ in range(num_requests)]

        started_s = time.perf_counter()
        outcomes = [o for per_client in await asyncio.gather(*(worker() for _ in range(concurrency))) for o in per_client]
        return outcomes, time.perf_counter() - started_s


def overhead(args: argparse.Namespace) -> dict[str, Tally]:
    replica_port, front_port = free_port(), free_port()
    targets = {"direct": f"http://127.0.0.1:{replica_port}", "front": f"http://127.0.0.1:{front_port}"}
    tallies = {name: Tally() for name in targets}
    with running(replica_command(replica_port, args.threads, args.concurrency), f"{targets['direct']}/health"), \
            running(front_command(front_port, [replica_port]), f"{targets['front']}/health"):
        wait_until_all_up(targets["front"], [replica_key(replica_port)])
        for name in targets:  # warm-up: first requests, connections, the front's first probe
            asyncio.run(load(targets[name], concurrency=args.concurrency, num_requests=1, max_tokens=8))
        for round_index in range(args.rounds):
            order = ["direct", "front"] if round_index % 2 == 0 else ["front", "direct"]
            for name in order:
                outcomes, wall_s = asyncio.run(load(targets[name], concurrency=args.concurrency,
                                                    num_requests=args.requests, max_tokens=args.max_tokens))
                tallies[name].add(outcomes, wall_s)
                alone = asyncio.run(load(targets[name], concurrency=1, num_requests=args.alone, max_tokens=1))[0]
                tallies[name].alone_ttfts_s += [o.first_token_s - o.started_s for o in alone if o.first_token_s]
                print(f"  round {round_index + 1} {name:6}: {sum(o.num_tokens for o in outcomes) / wall_s:6.1f} tok/s  "
                      f"TTFT p50 {statistics.median(o.first_token_s - o.started_s for o in outcomes) * 1000:6.1f} ms",
                      flush=True)
    return tallies


# --- failover -------------------------------------------------------------------------------------------------------

@dataclass
class Failover:
    outcomes: list[Outcome]
    killed_s: float
    restarted_s: float
    replica_ready_s: float  # the restarted replica's own /health answered 200
    seen_down_s: float | None  # the front's /metrics first showed it down
    back_up_s: float | None  # ... and up again
    num_requests_after_back: int  # requests the front sent it once back up, by its counter
    num_errors_after_back: int  # ... and of those, the ones it failed (a 503 while its model still loads)


def upstream_counter(metrics_text: str, name: str, key: str) -> int:
    found = re.search(r'^faisca_upstream_%s_total\{[^}]*replica="%s"[^}]*\}\s+(\S+)$' % (name, re.escape(key)),
                      metrics_text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


async def failover_scenario(front_url: str, replica_ports: list[int], victim: subprocess.Popen[bytes],
                            stack: ExitStack, args: argparse.Namespace) -> Failover:
    victim_port, victim_key = replica_ports[0], replica_key(replica_ports[0])
    outcomes: list[Outcome] = []
    stop = asyncio.Event()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            outcomes.append(await stream_chat(client, front_url, args.failover_tokens))

    limits = httpx.Limits(max_connections=args.failover_clients + 4)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        clients = [asyncio.create_task(client_loop(client)) for _ in range(args.failover_clients)]
        await asyncio.sleep(args.kill_after)
        victim.send_signal(signal.SIGKILL)
        killed_s = time.perf_counter()
        seen_down_s = back_up_s = None
        restarted_s = replica_ready_s = None
        counts_at_back = [0, 0]
        while back_up_s is None or replica_ready_s is None or time.perf_counter() < max(
                back_up_s, replica_ready_s) + args.after_back:
            now_s = time.perf_counter()
            if now_s - killed_s > 60:
                break
            if restarted_s is None and now_s - killed_s >= args.restart_after:
                restarted = subprocess.Popen(replica_command(victim_port, args.threads, 8),
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                stack.callback(lambda p=restarted: (p.terminate(), p.wait()))
                restarted_s = time.perf_counter()
            if restarted_s is not None and replica_ready_s is None:
                try:
                    if (await client.get(f"http://127.0.0.1:{victim_port}/health", timeout=1)).status_code == 200:
                        replica_ready_s = time.perf_counter()
                except httpx.TransportError:
                    pass
            text = (await client.get(f"{front_url}/metrics")).text
            is_up = upstream_up(text).get(victim_key)
            if seen_down_s is None and is_up is False:
                seen_down_s = time.perf_counter()
            if seen_down_s is not None and back_up_s is None and is_up:
                back_up_s = time.perf_counter()
                counts_at_back = [upstream_counter(text, name, victim_key) for name in ("requests", "errors")]
            await asyncio.sleep(0.05)
        text = (await client.get(f"{front_url}/metrics")).text
        num_after_back, num_errors_after_back = (upstream_counter(text, name, victim_key) - count
                                                 for name, count in zip(("requests", "errors"), counts_at_back))
        stop.set()
        await asyncio.gather(*clients)
    assert restarted_s is not None and replica_ready_s is not None, "the restarted replica never answered /health"
    return Failover(outcomes, killed_s, restarted_s, replica_ready_s, seen_down_s, back_up_s, num_after_back,
                    num_errors_after_back)


def failover(args: argparse.Namespace) -> Failover:
    replica_ports, front_port = [free_port(), free_port()], free_port()
    front_url = f"http://127.0.0.1:{front_port}"
    with ExitStack() as stack:
        replicas = [stack.enter_context(running(replica_command(port, args.threads, 8),
                                                f"http://127.0.0.1:{port}/health")) for port in replica_ports]
        stack.enter_context(running(front_command(front_port, replica_ports), f"{front_url}/health"))
        wait_until_all_up(front_url, [replica_key(port) for port in replica_ports])
        return asyncio.run(failover_scenario(front_url, replica_ports, replicas[0], stack, args))


# --- report ---------------------------------------------------------------------------------------------------------

def print_overhead(tallies: dict[str, Tally], args: argparse.Namespace) -> None:
    print(f"\noverhead: {args.rounds} rounds x {args.concurrency} clients x {args.requests} requests x "
          f"{args.max_tokens} tokens each way, replica --threads {args.threads}")
    print(f"{'':8}{'tok/s':>8}{'TTFT p50':>10}{'TTFT p90':>10}{'requests':>10}   alone: TTFT p50, p90 (requests)")
    for name, tally in tallies.items():
        ttfts, alone = tally.ttfts_s, tally.alone_ttfts_s
        print(f"{name:8}{tally.tok_per_s:8.1f}{statistics.median(ttfts) * 1000:8.1f}ms"
              f"{percentile(ttfts, 0.9) * 1000:8.1f}ms{len(ttfts):10}   {statistics.median(alone) * 1000:6.1f}ms "
              f"{percentile(alone, 0.9) * 1000:6.1f}ms ({len(alone)})")
    direct, front = tallies["direct"], tallies["front"]
    added_ms = (statistics.median(front.ttfts_s) - statistics.median(direct.ttfts_s)) * 1000
    added_alone_ms = (statistics.median(front.alone_ttfts_s) - statistics.median(direct.alone_ttfts_s)) * 1000
    ratios = [f / d for f, d in zip(front.phase_tok_per_s, direct.phase_tok_per_s, strict=True)]
    print(f"front/direct tok/s: {front.tok_per_s / direct.tok_per_s:.3f} (target >= 0.95; rounds "
          f"{min(ratios):.2f}-{max(ratios):.2f})   added TTFT p50: "
          f"{added_ms:+.1f} ms under load, {added_alone_ms:+.1f} ms alone (target <= 5 ms)")


def print_failover(result: Failover, args: argparse.Namespace) -> None:
    def after_kill(t_s: float) -> str:
        return f"{(t_s - result.killed_s) * 1000:+.0f} ms"

    failed = [o for o in result.outcomes if o.error is not None]
    failed_after_kill = [o for o in failed if o.started_s > result.killed_s]
    print(f"\nfailover: front over 2 replicas, {args.failover_clients} clients x {args.failover_tokens}-token streams, "
          f"SIGKILL at {args.kill_after:g} s, restart {args.restart_after:g} s after")
    print(f"requests: {len(result.outcomes)}, failed: {len(failed)} "
          f"({', '.join(sorted({o.error or '' for o in failed})) or 'none'}), "
          f"failed that started after the kill: {len(failed_after_kill)}")
    if failed:
        last = max(failed, key=lambda o: o.ended_s)
        print(f"last failure: seen {after_kill(last.ended_s)} (it started {after_kill(last.started_s)})")
    else:
        print("last failure: none")
    before = [o.ended_s - o.started_s for o in result.outcomes if o.ended_s < result.killed_s]
    print(f"latency before the kill: p50 {statistics.median(before) * 1000:.0f} ms, max {max(before) * 1000:.0f} ms")
    around = [o for o in result.outcomes if result.killed_s - 1 < o.started_s < result.killed_s + 1 and o.error is None]
    if around:
        print(f"latency of the requests that succeeded within 1 s of the kill: p50 "
              f"{statistics.median(o.ended_s - o.started_s for o in around) * 1000:.0f} ms, max "
              f"{max(o.ended_s - o.started_s for o in around) * 1000:.0f} ms")
    print(f"front shows it down: {after_kill(result.seen_down_s) if result.seen_down_s else 'never'}; restarted: "
          f"{after_kill(result.restarted_s)}; its /health 200: {after_kill(result.replica_ready_s)}; "
          f"front shows it up: {after_kill(result.back_up_s) if result.back_up_s else 'never'} "
          + (f"({(result.back_up_s - result.replica_ready_s) * 1000:.0f} ms after it was ready); " if result.back_up_s
             else "; ")
          + f"from then until {args.after_back:g} s after both: {result.num_requests_after_back} requests sent to it, "
            f"{result.num_errors_after_back} of them failed there (retried)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="direct/front pairs in the overhead scenario")
    parser.add_argument("--concurrency", type=int, default=4, help="clients at once in the overhead scenario")
    parser.add_argument("--requests", type=int, default=2, help="requests per client per phase")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--alone", type=int, default=8,
                        help="requests of 1 token, one at a time, after each phase: TTFT with nothing else running")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads of each replica")
    parser.add_argument("--failover-clients", type=int, default=4)
    parser.add_argument("--failover-tokens", type=int, default=4, help="max_tokens of each failover request")
    parser.add_argument("--kill-after", type=float, default=3.0, help="seconds of load before the SIGKILL")
    parser.add_argument("--restart-after", type=float, default=3.0, help="seconds from the kill to the restart")
    parser.add_argument("--after-back", type=float, default=2.0, help="seconds of load once it is back up")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-failover", action="store_true")
    args = parser.parse_args()
    print(f"Gemma 3 270M, {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.2f} at start",
          flush=True)
    started_s = time.perf_counter()
    if not args.skip_overhead:
        print_overhead(overhead(args), args)
    if not args.skip_failover:
        print_failover(failover(args), args)
    print(f"\n{time.perf_counter() - started_s:.0f} s, load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
