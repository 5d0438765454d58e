"""Prometheus metrics: one registry per app (no module globals), exposed at GET /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from faisca.fleet import ReplicaStats

_LOAD_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
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


class _SpeculationCollector(Collector):
    """Speculative decoding (`--spec`), per model: draft tokens verified and those accepted (vLLM's
    `spec_decode_num_draft_tokens` / `spec_decode_num_accepted_tokens`); their ratio is the acceptance rate."""

    def __init__(self, read_speculation: Callable[[], Mapping[str, tuple[int, int]]]) -> None:
        self._read_speculation = read_speculation

    def collect(self) -> Iterator[CounterMetricFamily]:
        drafted = CounterMetricFamily("faisca_spec_decode_draft_tokens", "Draft tokens verified by speculative "
                                      "decoding", labels=["model"])
        accepted = CounterMetricFamily("faisca_spec_decode_accepted_tokens", "Draft tokens the model agreed with "
                                       "(each saves one decoding step)", labels=["model"])
        for model, (num_drafted, num_accepted) in self._read_speculation().items():
            drafted.add_metric([model], num_drafted)
            accepted.add_metric([model], num_accepted)
        yield drafted
        yield accepted


class _ReplicaCollector(Collector):
    """Per upstream replica (`faisca serve --upstream`): up or down, requests running on it, requests and errors."""

    def __init__(self, read_replicas: Callable[[], Sequence[ReplicaStats]]) -> None:
        self._read_replicas = read_replicas

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["model", "replica"]
        up = GaugeMetricFamily("faisca_upstream_up", "1 while the upstream replica is up", labels=labels)
        running = GaugeMetricFamily("faisca_upstream_requests_running", "Requests sent to the replica, not ended",
                                    labels=labels)
        requests = CounterMetricFamily("faisca_upstream_requests", "Requests sent to the replica", labels=labels)
        errors = CounterMetricFamily("faisca_upstream_errors", "Requests the replica failed (connection errors, "
                                     "5xx, broken streams)", labels=labels)
        for state in self._read_replicas():
            names = [state.model, state.replica]
            up.add_metric(names, int(state.is_up))
            running.add_metric(names, state.num_running)
            requests.add_metric(names, state.num_requests)
            errors.add_metric(names, state.num_errors)
        yield from (up, running, requests, errors)


class ResidentState(Protocol):
    @property
    def served(self) -> Any: ...  # its `.card.id`
    num_bytes: int
    num_in_flight: int
    is_pinned: bool


class _ResidentCollector(Collector):
    """The models in memory: how much each takes (its estimate: weights, KV cache, projector)."""

    def __init__(self, read_residents: Callable[[], Sequence[ResidentState]]) -> None:
        self._read_residents = read_residents

    def collect(self) -> Iterator[GaugeMetricFamily]:
        loaded = GaugeMetricFamily("faisca_model_loaded", "1 for each model in memory (pinned: named at start)",
                                   labels=["model", "pinned"])
        memory = GaugeMetricFamily("faisca_model_memory_bytes", "Memory a loaded model takes: weights, KV cache, "
                                   "projector", labels=["model"])
        for resident in self._read_residents():
            model = resident.served.card.id
            loaded.add_metric([model, "true" if resident.is_pinned else "false"], 1)
            memory.add_metric([model], resident.num_bytes)
        yield loaded
        yield memory


class Metrics:
    def __init__(self, read_queues: Callable[[], Mapping[str, tuple[int, int]]] = dict,
                 read_replicas: Callable[[], Sequence[ReplicaStats]] = list,
                 read_residents: Callable[[], Sequence[ResidentState]] = list,
                 read_speculation: Callable[[], Mapping[str, tuple[int, int]]] = dict) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_QueueCollector(read_queues))
        self.registry.register(_SpeculationCollector(read_speculation))
        self.registry.register(_ReplicaCollector(read_replicas))
        self.registry.register(_ResidentCollector(read_residents))
        self.model_loads = Counter("faisca_model_loads", "Models loaded (at start or on a request)", ["model"],
                                   registry=self.registry)
        self.model_unloads = Counter("faisca_model_unloads", "Models unloaded, by why: idle (keep_alive), "
                                     "keep_alive_0 (asked for), evicted (for another's room)", ["model", "reason"],
                                     registry=self.registry)
        self.model_load_s = Histogram("faisca_model_load_seconds", "Loading a model: weights, context, adapters",
                                      ["model"], buckets=_LOAD_BUCKETS_S, registry=self.registry)
        self.requests = Counter("faisca_requests", "HTTP requests answered, by status code", ["status"],
                                registry=self.registry)
        self.time_to_first_token_s = Histogram(
            "faisca_time_to_first_token_seconds", "From admission to the first generated token", ["model"],
            buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.time_per_output_token_s = Histogram(
            "faisca_time_per_output_token_seconds", "Between consecutive generated tokens", ["model"],
            buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.upstream_time_to_first_token_s = Histogram(
            "faisca_upstream_time_to_first_token_seconds", "From sending a request to an upstream replica to its "
            "first token", ["model", "replica"], buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.prompt_tokens = Counter("faisca_prompt_tokens", "Prompt tokens processed", ["model"], registry=self.registry)
        self.generation_tokens = Counter("faisca_generation_tokens", "Tokens generated", ["model"], registry=self.registry)

    def model_loaded(self, model_id: str, seconds: float) -> None:
        self.model_loads.labels(model_id).inc()
        self.model_load_s.labels(model_id).observe(seconds)

    def model_unloaded(self, model_id: str, reason: str) -> None:
        self.model_unloads.labels(model_id, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
