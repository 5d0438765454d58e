"""Does one request hurt the others? `/health` latency while streams run and pathological requests arrive.

Not a test (tests/e2e/test_hostile_load.py runs a smaller dose and bounds only the worst case). Starts `faisca serve`
on the embedded model, runs NUM_STREAMS greedy streams, and meanwhile sends, a few times each: an Ollama chat of
20,000 short messages with a tiny num_ctx (cut to fit), OpenAI bodies of 20,000 messages and of one 2 MB message
(too long for the context), 5,000 Ollama stop strings, 100,000 logit_bias entries, JSON nested 100,000 deep and a
response_format schema nested 5,000 deep. A thread of its own polls `/health` every 20 ms; prints its p50/p99/max
latency, the streams' tok/s, and the status codes the pathological requests got (none may be 5xx).

    .venv/bin/python bench/hostile_load.py [--streams 8] [--tokens 96] [--doses 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from dataclasses import dataclass, field

import httpx

MODEL = "gemma3:270m"


def _nested_schema(depth: int) -> str:
    """A JSON Schema nested `depth` objects deep, as text (json.dumps would recurse too deep to write it)."""
    return '{"type":"object","properties":{"a":' * depth + '{"type":"string"}' + "}}" * depth


def pathological_bodies() -> list[tuple[str, bytes]]:
    """(path, body) of each pathological request, serialized up front so the client's own loop stays free."""
    short_turns = [{"role": "user" if index % 2 == 0 else "assistant", "content": f"turn {index}"}
                   for index in range(20_000)] + [{"role": "user", "content": "last"}]
    bodies: list[tuple[str, object]] = [
        ("/api/chat", {"model": MODEL, "messages": short_turns, "stream": False,
                       "options": {"num_ctx": 128, "num_predict": 4}}),
        ("/v1/chat/completions", {"model": MODEL, "messages": short_turns, "max_tokens": 4}),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "word " * 400_000}],
                                  "max_tokens": 4}),
        ("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                           "options": {"num_predict": 4, "stop": [f"stop {index}" for index in range(5_000)]}}),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                                  "logit_bias": {str(index): 1 for index in range(100_000)}}),
    ]
    encoded = [(path, json.dumps(body).encode()) for path, body in bodies]
    deep_format = ('{"model":"%s","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"response_format":'
                   '{"type":"json_schema","json_schema":{"name":"deep","schema":%s}}}' % (MODEL, _nested_schema(5_000)))
    encoded.append(("/v1/chat/completions", deep_format.encode()))
    encoded.append(("/v1/chat/completions", b'{"a":' * 100_000 + b"1" + b"}" * 100_000))
    return encoded


@dataclass
class Outcome:
    health_latencies_s: list[float] = field(default_factory=list)
    stream_tokens: list[int] = field(default_factory=list)
    stream_seconds: float = 0.0
    statuses: dict[str, list[int]] = field(default_factory=dict)  # path + size -> status codes

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.health_latencies_s)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _poll_health(base_url: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get("/health")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)


async def _stream(client: httpx.AsyncClient, index: int, num_tokens: int) -> int:
    """One greedy stream; the number of tokens it got (its usage, in the last chunk)."""
    body = {"model": MODEL, "stream": True, "max_tokens": num_tokens, "temperature": 0, "ignore_eos": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Tell story number {index} about a lighthouse."}]}
    num_tokens_got = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {") and (usage := json.loads(line[len("data: "):]).get("usage")):
                num_tokens_got = usage["completion_tokens"]
    return num_tokens_got


async def _pathological(client: httpx.AsyncClient, path: str, body: bytes, outcome: Outcome) -> None:
    response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    outcome.statuses.setdefault(f"{path} ({len(body) // 1024} KiB)", []).append(response.status_code)


def run(base_url: str, *, num_streams: int, num_tokens: int, num_doses: int) -> Outcome:
    outcome = Outcome()
    bodies = pathological_bodies()
    stop = threading.Event()
    poller = threading.Thread(target=_poll_health, args=(base_url, stop, outcome.health_latencies_s))

    async def scenario() -> None:
        limits = httpx.Limits(max_connections=num_streams + len(bodies) * num_doses + 4)
        async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
            started = time.perf_counter()
            streams = asyncio.gather(*(_stream(client, index, num_tokens) for index in range(num_streams)))
            await asyncio.gather(*(_pathological(client, path, body, outcome)
                                   for _ in range(num_doses) for path, body in bodies))
            outcome.stream_tokens = await streams
            outcome.stream_seconds = time.perf_counter() - started

    poller.start()
    try:
        asyncio.run(scenario())
    finally:
        stop.set()
        poller.join()
    return outcome


def main() -> None:
    from servers import faisca_command, free_port, running

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--doses", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    with running(faisca_command(port, threads=args.threads, context_tokens=2048), f"http://127.0.0.1:{port}/health"):
        outcome = run(f"http://127.0.0.1:{port}", num_streams=args.streams, num_tokens=args.tokens,
                      num_doses=args.doses)
    latencies_ms = [latency * 1000 for latency in outcome.health_latencies_s]
    print(f"/health: {len(latencies_ms)} polls, p50 {statistics.median(latencies_ms):.1f} ms, "
          f"p99 {outcome.percentile(0.99) * 1000:.1f} ms, max {max(latencies_ms):.1f} ms")
    print(f"streams: {args.streams} x {args.tokens} tokens in {outcome.stream_seconds:.1f} s "
          f"({sum(outcome.stream_tokens) / outcome.stream_seconds:.1f} tok/s aggregate)")
    for request, statuses in outcome.statuses.items():
        print(f"  {request}: {statuses}")


if __name__ == "__main__":
    main()
