"""LoRA bookkeeping without llama.cpp: adapter residency and users, the prefix cache's keys, and the step policy's
turns between adapter sets. The real adapters run in tests/e2e/test_lora.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from faisca.engine.kv_cache import CacheKey, PrefixCache
from faisca.engine.lora import AdapterTable, NoRoomForAdapter
from faisca.scheduler import SchedulerConfig, SequenceView, pick_group, schedule


class FakeLlama:
    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.freed: list[str] = []

    def load(self, path: Path) -> object:
        if path.name == "broken.gguf":
            raise ValueError("not a LoRA adapter")
        self.loaded.append(path.name)
        return path.name

    def free(self, handle: object) -> None:
        self.freed.append(str(handle))


def _table(max_resident: int = 2) -> tuple[AdapterTable, FakeLlama]:
    llama = FakeLlama()
    return AdapterTable(max_resident=max_resident, load=llama.load, free=llama.free), llama


def test_ids_are_never_reused_and_a_broken_file_registers_nothing() -> None:
    table, _ = _table()
    first = table.register("a", Path("a.gguf"))
    with pytest.raises(ValueError):
        table.register("b", Path("broken.gguf"))
    table.unregister("a")
    assert table.register("a", Path("a.gguf")).id == first.id + 1
    assert [adapter.name for adapter in table.listed()] == ["a"]
    with pytest.raises(ValueError, match="already"):
        table.register("a", Path("a.gguf"))


def test_the_least_recently_used_idle_adapter_makes_room_and_comes_back_when_asked_for() -> None:
    table, llama = _table(max_resident=2)
    a, b = table.register("a", Path("a.gguf")), table.register("b", Path("b.gguf"))
    table.acquire([b.id])
    table.release([b.id])  # b is now the more recent
    c = table.register("c", Path("c.gguf"))
    assert llama.freed == ["a.gguf"] and a.handle is None and c.handle is not None
    table.acquire([a.id])  # loaded again, evicting b (c is more recent)
    assert llama.freed == ["a.gguf", "b.gguf"] and table.handle(a.id) == "a.gguf"


def test_when_every_resident_adapter_is_in_use_a_new_one_waits() -> None:
    table, _ = _table(max_resident=1)
    a = table.register("a", Path("a.gguf"))
    b = table.register("b", Path("b.gguf"))  # a was idle: freed
    table.acquire([b.id])
    with pytest.raises(NoRoomForAdapter):
        table.acquire([a.id])
    table.release([b.id])
    table.acquire([a.id])


def test_an_adapter_unloaded_while_in_use_is_freed_when_its_last_user_ends() -> None:
    table, llama = _table()
    a = table.register("a", Path("a.gguf"))
    table.acquire([a.id])
    table.acquire([a.id])
    table.unregister("a")
    assert table.by_name("a") is None and llama.freed == []
    with pytest.raises(KeyError):
        table.acquire([a.id])  # no new user
    table.release([a.id])
    assert llama.freed == []
    table.release([a.id])
    assert llama.freed == ["a.gguf"]


def test_kv_computed_under_one_adapter_set_is_never_a_prefix_for_another() -> None:
    cache = PrefixCache(num_slots=3)
    base, tuned, softer = CacheKey(), CacheKey(loras=((0, 1.0),)), CacheKey(loras=((0, 0.5),))
    slot = cache.take_least_recent()
    cache.release(slot, base, [1, 2, 3, 4])
    assert cache.longest_prefix(base, [1, 2, 3, 9], []) == (slot, 3)
    assert cache.longest_prefix(tuned, [1, 2, 3, 9], []) == (-1, 0)
    assert cache.longest_prefix(tuned, [1, 2, 3, 9], [(2, tuned, [1, 2])]) == (2, 2)  # a running sequence's
    assert cache.longest_prefix(softer, [1, 2, 3, 9], [(2, tuned, [1, 2])]) == (-1, 0)
    assert cache.longest_prefix(CacheKey(salt="tenant"), [1, 2, 3], []) == (-1, 0)


def test_adapter_sets_take_turns_and_a_step_feeds_one_set() -> None:
    views = [SequenceView(0, 1, ()), SequenceView(1, 1, ((0, 1.0),)), SequenceView(2, 5, ()),
             SequenceView(3, 1, ((0, 1.0),))]
    served: dict[object, int] = {}
    order = []
    for step in range(4):
        group = pick_group(views, served)
        served[group] = step
        order.append(group)
        plan = schedule(views, [], SchedulerConfig(max_num_seqs=8, max_batch_tokens=64), group=group)
        assert {view.group for view in views if view.request_id in dict(plan.chunks)} == {group}
    assert order == [(), ((0, 1.0),), (), ((0, 1.0),)]
    alone = schedule(views[:1], [], SchedulerConfig(max_num_seqs=8, max_batch_tokens=64), group=())
    assert alone.chunks == ((0, 1),)
