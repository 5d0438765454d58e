"""The pure parts of the model lifecycle: keep_alive as Ollama reads it, the memory estimate, and which idle model
leaves to make room."""

from __future__ import annotations

from pathlib import Path

import pytest

from faisca.errors import InvalidRequest
from faisca.lifecycle import FOREVER, KvCacheLayout, Resident, estimate_memory, parse_keep_alive, parse_keep_alive_flag
from faisca.lifecycle.memory import available_memory_bytes
from faisca.lifecycle.eviction import plan_room


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None), (0, 0.0), ("0", 0.0), (30, 30.0), (2.5, 2.5), ("5m", 300.0), ("1h30m", 5400.0), ("10s", 10.0),
    ("1.5h", 5400.0), ("250ms", 0.25), (-1, FOREVER), ("-1m", FOREVER), (" 5m ", 300.0),
    (1e300, FOREVER),  # beyond Go's longest duration: Ollama cannot tell it from forever either
])
def test_keep_alive_reads_as_ollama_does(value: object, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "300", "-1", "m", "", "1d", True, [1], {"m": 5}, float("nan")])
def test_a_keep_alive_that_is_no_duration_is_a_400_naming_it(value: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_keep_alive(value)
    assert caught.value.param == "keep_alive" and caught.value.status_code == 400


def test_the_flag_takes_durations_and_bare_seconds() -> None:
    assert parse_keep_alive_flag("2") == 2.0
    assert parse_keep_alive_flag("5m") == 300.0
    assert parse_keep_alive_flag("-1") == FOREVER
    with pytest.raises(ValueError):
        parse_keep_alive_flag("soon")


GEMMA3_270M = {"general.architecture": "gemma3", "gemma3.block_count": "18", "gemma3.attention.head_count": "4",
               "gemma3.attention.head_count_kv": "1", "gemma3.embedding_length": "640",
               "gemma3.attention.key_length": "256", "gemma3.attention.value_length": "256"}
SMOLLM2 = {"general.architecture": "llama", "llama.block_count": "30", "llama.attention.head_count": "9",
           "llama.attention.head_count_kv": "3", "llama.embedding_length": "576"}


def test_the_kv_cache_is_tokens_by_layers_by_kv_heads_by_head_sizes() -> None:
    gemma = KvCacheLayout.from_metadata(GEMMA3_270M)
    assert gemma == KvCacheLayout(num_layers=18, num_kv_heads=1, key_size=256, value_size=256)
    assert gemma.bytes_per_token() == 18 * 1 * (256 * 2 + 256 * 34 / 32)  # K in F16, V in Q8_0
    smollm2 = KvCacheLayout.from_metadata(SMOLLM2)  # no key/value lengths: the head size, 576 / 9
    assert smollm2 == KvCacheLayout(num_layers=30, num_kv_heads=3, key_size=64, value_size=64)
    odd = KvCacheLayout(num_layers=1, num_kv_heads=1, key_size=40, value_size=40)  # no Q8_0 V cache: F16
    assert odd.bytes_per_token() == 40 * 2 + 40 * 2
    with pytest.raises(ValueError, match="has no"):
        KvCacheLayout.from_metadata({"general.architecture": "mystery"})


def test_the_estimate_adds_weights_kv_cache_projector_and_runtime() -> None:
    layout = KvCacheLayout.from_metadata(GEMMA3_270M)
    estimate = estimate_memory(weights_bytes=253_113_024, layout=layout, kv_cache_tokens=8192, vocab_size=262_144,
                               projector_bytes=1000)
    assert estimate.kv_cache_bytes == round(layout.bytes_per_token() * 8192)
    assert estimate.total_bytes == 253_113_024 + estimate.kv_cache_bytes + 1000 + estimate.runtime_bytes
    # what this box measured for Gemma 3 270M with an 8192-token cache, after a first answer: 522 MB of RSS
    assert 522e6 <= estimate.total_bytes <= 522e6 * 1.1


def test_available_memory_is_the_smaller_of_the_kernels_and_the_cgroups(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable:  8000 kB\n")
    assert available_memory_bytes(proc=tmp_path, cgroup=tmp_path / "none") == 8000 * 1024
    (tmp_path / "memory.max").write_text("4096000\n")
    (tmp_path / "memory.current").write_text("96000\n")
    assert available_memory_bytes(proc=tmp_path, cgroup=tmp_path) == 4_000_000
    (tmp_path / "memory.max").write_text("max\n")
    assert available_memory_bytes(proc=tmp_path, cgroup=tmp_path) == 8000 * 1024
    assert available_memory_bytes(proc=tmp_path / "none", cgroup=tmp_path / "none") is None


def resident(model_id: str, num_bytes: int, *, in_flight: int = 0, used: float = 0, pinned: bool = False) -> Resident:
    return Resident(model_id, num_bytes, in_flight, used, pinned)


def test_a_model_that_fits_evicts_nothing() -> None:
    room = plan_room([resident("a", 10)], 10, budget_bytes=100, max_loaded_models=None)
    assert room.verdict == "fits" and room.evict == ()
    assert plan_room([], 10, budget_bytes=None, max_loaded_models=None).verdict == "fits"


def test_the_least_recently_used_idle_models_leave_first_and_only_as_many_as_needed() -> None:
    residents = [resident("old", 40, used=1), resident("older", 40, used=0), resident("new", 10, used=2)]
    assert plan_room(residents, 50, budget_bytes=100, max_loaded_models=None).evict == ("older",)
    assert plan_room(residents, 91, budget_bytes=100, max_loaded_models=None).evict == ("older", "old", "new")
    assert plan_room(residents, 1, budget_bytes=None, max_loaded_models=2).evict == ("older", "old")


def test_a_model_in_use_or_pinned_never_leaves_so_the_load_waits() -> None:
    residents = [resident("busy", 60, in_flight=1, used=0), resident("pinned", 20, used=0, pinned=True),
                 resident("idle", 20, used=5)]
    room = plan_room(residents, 30, budget_bytes=100, max_loaded_models=None)
    assert room.verdict == "busy" and "busy" in room.reason
    assert plan_room(residents, 20, budget_bytes=100, max_loaded_models=None).evict == ("idle",)
    assert plan_room([resident("busy", 1, in_flight=2)], 1, budget_bytes=None, max_loaded_models=1).verdict == "busy"


def test_a_model_that_could_never_fit_is_refused_for_good() -> None:
    assert plan_room([], 101, budget_bytes=100, max_loaded_models=None).verdict == "never"
    beside_pinned = plan_room([resident("pinned", 60, pinned=True)], 50, budget_bytes=100, max_loaded_models=None)
    assert beside_pinned.verdict == "never" and "pinned" in beside_pinned.reason
    assert plan_room([resident("p", 1, pinned=True)], 1, budget_bytes=None, max_loaded_models=1).verdict == "never"
