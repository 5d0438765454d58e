"""Prometheus metrics: one registry per app (no module globals), exposed at GET /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5, 10, 20, 40)


class _QueueCollector(Collector):
    def __init__(self, read_queues: Callable[[], Mapping[str, tuple[int, int]]]) -> None:
        self._read_queues = read_queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        running = GaugeMetricFamily("faisca_requests_running", "Sequences generating now", labels=["model"])
        waiting = GaugeMetricFamily("faisca_requests_waiting", "Requests admitted, waiting to run", labels=["model"])
        for model, (num_running, num_waiting) in self._read_queues().items():
            running.add_metric([model], num_running)
            waiting.add_metric([model], num_waiting)
        yield running
        yield waiting


class Metrics:
    def __init__(self, read_queues: Callable[[], Mapping[str, tuple[int, int]]] = dict) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_QueueCollector(read_queues))
        self.requests = Counter("faisca_requests", "HTTP requests answered, by status code", ["status"],
                                registry=self.registry)
        self.time_to_first_token_s = Histogram(
            "faisca_time_to_first_token_seconds", "From admission to the first generated token", ["model"],
            buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.time_per_output_token_s = Histogram(
            "faisca_time_per_output_token_seconds", "Between consecutive generated tokens", ["model"],
            buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.prompt_tokens = Counter("faisca_prompt_tokens", "Prompt tokens processed", ["model"], registry=self.registry)
        self.generation_tokens = Counter("faisca_generation_tokens", "Tokens generated", ["model"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
