"""LoRA adapters of one base model: which are registered (a name and a GGUF file each, an id that is never reused),
which are resident (loaded into llama.cpp), and which running sequences use them.

At most `max_resident` are resident; a sequence that needs another one makes room by freeing the least recently
used adapter that no sequence uses, and waits (stays queued) when every resident adapter is in use. An adapter
unregistered while sequences use it is freed when the last of them ends. Owned by the engine thread; the event loop
only reads names (`by_name`, `listed`), whose dict operations are atomic under the GIL.

llama.cpp applies one set of adapters to a whole `llama_decode`, so a step batches only sequences of one set; the
set is part of the KV cache key (`kv_cache.CacheKey`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(eq=False)
class Adapter:
    id: int
    name: str
    path: Path
    handle: object | None = None  # llama.cpp's adapter while resident
    num_users: int = 0  # running sequences computing with it
    last_used: int = 0  # a tick: larger is more recent
    is_unregistered: bool = False  # freed once its last user ends; no new request can name it


class NoRoomForAdapter(Exception):
    """Every resident adapter is in use: the sequence waits for one to be released."""


class AdapterTable:
    def __init__(self, *, max_resident: int, load: Callable[[Path], object], free: Callable[[object], None]) -> None:
        self.max_resident = max_resident
        self._load = load  # a GGUF path -> llama.cpp's adapter (raises ValueError saying why it cannot)
        self._free = free
        self._by_name: dict[str, Adapter] = {}
        self._by_id: dict[int, Adapter] = {}
        self._ids = itertools.count()
        self._ticks = itertools.count(1)

    # --- read from any thread

    def by_name(self, name: str) -> Adapter | None:
        return self._by_name.get(name)

    def listed(self) -> list[Adapter]:
        return sorted(self._by_name.values(), key=lambda adapter: adapter.id)

    # --- the engine thread

    def register(self, name: str, path: Path) -> Adapter:
        """Load the adapter now (so that a file that does not fit the base is refused at once) and name it."""
        if name in self._by_name:
            raise ValueError(f"an adapter named `{name}` is already loaded")
        self._make_room()
        handle = self._load(path)
        adapter = Adapter(next(self._ids), name, path, handle, last_used=next(self._ticks))
        self._by_id[adapter.id] = adapter
        self._by_name[name] = adapter
        return adapter

    def unregister(self, name: str) -> Adapter:
        adapter = self._by_name.pop(name)
        adapter.is_unregistered = True
        if adapter.num_users == 0:
            self._evict(adapter)
        return adapter

    def acquire(self, ids: Iterable[int]) -> None:
        """The adapters of a sequence about to run: made resident (NoRoomForAdapter when they cannot be yet;
        KeyError for an unregistered one) and counted as used."""
        adapters = [self._by_id[adapter_id] for adapter_id in ids]
        if any(adapter.is_unregistered for adapter in adapters):
            raise KeyError(next(adapter.name for adapter in adapters if adapter.is_unregistered))
        for adapter in adapters:
            if adapter.handle is None:
                self._make_room(keep=adapters)
                adapter.handle = self._load(adapter.path)
        for adapter in adapters:
            adapter.num_users += 1
            adapter.last_used = next(self._ticks)

    def release(self, ids: Iterable[int]) -> None:
        for adapter_id in ids:
            adapter = self._by_id[adapter_id]
            adapter.num_users -= 1
            if adapter.is_unregistered and adapter.num_users == 0:
                self._evict(adapter)

    def handle(self, adapter_id: int) -> object:
        handle = self._by_id[adapter_id].handle
        assert handle is not None, "an adapter in use is resident"
        return handle

    def close(self) -> None:
        for adapter in list(self._by_id.values()):
            self._evict(adapter)

    def _make_room(self, keep: Iterable[Adapter] = ()) -> None:
        resident = [adapter for adapter in self._by_id.values() if adapter.handle is not None]
        if len(resident) < self.max_resident:
            return
        kept = set(keep)
        idle = [adapter for adapter in resident if adapter.num_users == 0 and adapter not in kept]
        if not idle:
            raise NoRoomForAdapter
        self._unload(min(idle, key=lambda adapter: adapter.last_used))

    def _unload(self, adapter: Adapter) -> None:
        if adapter.handle is not None:
            self._free(adapter.handle)
            adapter.handle = None

    def _evict(self, adapter: Adapter) -> None:
        self._unload(adapter)
        if adapter.is_unregistered:
            self._by_id.pop(adapter.id, None)
