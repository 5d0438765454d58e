"""The models this server serves, and which of them are in memory.

Every card whose weights are here (or whose upstreams are named) is servable. Models named at start (`--model`,
`--gguf`, `--upstream`) load in the background at start and are pinned: kept forever, never evicted. The others load
on their first request, which waits for it (concurrent first requests share one load), and leave when idle for
their `keep_alive` (Ollama's meaning, `faisca.lifecycle.keep_alive`), or when a model that does not fit the memory
budget needs their room (`faisca.lifecycle.eviction`: least recently used idle model first; never one in use).

Each request holds a `Lease` on its model from before its load to the end of its stream; the last lease released
starts the model's idle timer. Loads and unloads take turns under one lock (they share the cores, and the memory
accounting stays exact); requests to models in memory never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from faisca.catalog import Catalog, ModelCard
from faisca.chat.literal import ControlTextEscaper
from faisca.chat.template import ChatTemplate
from faisca.engine.base import Engine, EngineStats, LoraInfo
from faisca.engine.weights import missing_weights_message
from faisca.errors import (
    EngineError, FaiscaError, ModelTooLarge, ModelUnavailable, NoReplica, NoRoom, NotReady,
)
from faisca.fleet import Fleet, ReplicaStats
from faisca.lifecycle import FOREVER, Resident, plan_room

logger = logging.getLogger("faisca.registry")

EngineLoader = Callable[[ModelCard], Engine | Fleet]
MemoryEstimator = Callable[[ModelCard], int]  # bytes the model takes once loaded (blocking: run on a thread)
DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's default: 5 minutes
NO_ROOM_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class ServedModel:
    """A model whose weights run here."""

    card: ModelCard
    engine: Engine
    template: ChatTemplate | None  # None for an embedding model, which chats not
    escaper: ControlTextEscaper  # keeps client text from becoming the engine's control tokens

    @property
    def max_context_tokens(self) -> int:
        return self.engine.max_context_tokens

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.engine.metadata

    @property
    def stats(self) -> EngineStats:
        return self.engine.stats


@dataclass(frozen=True)
class RemoteModel:
    """A model served by upstream servers, faisca in front (`faisca.fleet`)."""

    card: ModelCard
    fleet: Fleet

    @property
    def max_context_tokens(self) -> int:
        return self.fleet.max_model_len or self.card.context_length

    @property
    def metadata(self) -> Mapping[str, str]:
        return {}

    @property
    def stats(self) -> EngineStats:  # requests are queued upstream, not here
        return EngineStats(num_running=sum(replica.outstanding for replica in self.fleet.replicas), num_waiting=0)


AnyServed = ServedModel | RemoteModel


@dataclass(frozen=True)
class MemoryBudget:
    """What may be in memory at once: bytes (the weights, KV cache and projector of each model) and models; None:
    no limit of that kind."""

    max_bytes: int | None = None
    max_loaded_models: int | None = None


class LifecycleListener(Protocol):
    def model_loaded(self, model_id: str, seconds: float) -> None: ...

    def model_unloaded(self, model_id: str, reason: str) -> None: ...


@dataclass(frozen=True)
class ResidentModel:
    """A model in memory, as `/api/ps` and the metrics show it."""

    served: AnyServed
    num_bytes: int
    num_in_flight: int
    is_pinned: bool
    expires_at: float | None  # wall-clock seconds; None: kept forever


def chat_template_for(card: ModelCard, engine: Engine) -> ChatTemplate:
    """The card's shipped template, else the one in the weights; never a silent generic fallback."""
    tokens = engine.tokens
    if card.runtime.chat_template is not None:
        return ChatTemplate.shipped(card.runtime.chat_template, bos_token=tokens.bos_text, eos_token=tokens.eos_text)
    if source := engine.chat_template_source:
        return ChatTemplate(source, bos_token=tokens.bos_text, eos_token=tokens.eos_text)
    raise ModelUnavailable(
        f"The weights of `{card.id}` carry no chat template and its card names none; add `chat_template` to its card."
    )


def _stopped_message(card_id: str) -> str:
    return f"The engine of `{card_id}` has stopped (see the server log); restart the server."


def is_servable(card: ModelCard) -> bool:
    return card.runtime.engine == "upstream" or card.runtime.weights is not None


@dataclass(eq=False)
class _Slot:
    """One model loading or in memory."""

    card: ModelCard
    is_pinned: bool
    keep_alive_s: float
    last_used_s: float
    loading: asyncio.Task[None] | None = None
    served: AnyServed | None = None  # None while loading
    num_bytes: int = 0
    num_in_flight: int = 0
    expires_at: float | None = None  # wall clock, set when the last lease is released
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def resident(self) -> Resident:
        return Resident(self.card.id, self.num_bytes, self.num_in_flight, self.last_used_s,
                        self.is_pinned or isinstance(self.served, RemoteModel))


class Lease:
    """A request's hold on its model: while any is held, the model is not unloaded. Released exactly once."""

    def __init__(self, registry: ModelRegistry, slot: _Slot) -> None:
        self._registry: ModelRegistry | None = registry
        self._slot = slot
        assert slot.served is not None
        self.served: AnyServed = slot.served

    def release(self) -> None:
        if self._registry is not None:
            self._registry._release(self._slot)
            self._registry = None


class ModelRegistry:
    def __init__(self, catalog: Catalog, served_ids: Iterable[str], load_engine: EngineLoader, *,
                 on_fatal: Callable[[str], None] | None = None, estimate_bytes: MemoryEstimator | None = None,
                 budget: MemoryBudget = MemoryBudget(), default_keep_alive_s: float = DEFAULT_KEEP_ALIVE_S) -> None:
        self.catalog = catalog
        self._load_engine = load_engine
        self._estimate_bytes = estimate_bytes
        self.budget = budget
        self.default_keep_alive_s = default_keep_alive_s
        # a LoRA adapter named at start that does not load: the CLI ends the process (one line, exit 2); without it
        # the model fails alone
        self._on_fatal = on_fatal
        self._pinned = [catalog.resolve(name) for name in dict.fromkeys(served_ids)]
        self._pinned_ids = {card.id for card in self._pinned}
        self._slots: dict[str, _Slot] = {}
        self._failed: dict[str, FaiscaError] = {}  # pinned models that did not load at start
        self._sizes: dict[str, int] = {}  # each card's estimated bytes in memory
        self._turn = asyncio.Lock()  # loads and unloads, one at a time
        self._is_loading = bool(self._pinned)
        self.listener: LifecycleListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: set[asyncio.Task[None]] = set()  # idle unloads under way (held: the loop keeps weak references)

    # --- what is served

    @property
    def served_cards(self) -> list[ModelCard]:
        """Every servable model: those named at start first, then the catalog's others with weights here."""
        return [*self._pinned, *(card for card in self.catalog if is_servable(card) and card.id not in self._pinned_ids)]

    @property
    def pinned_cards(self) -> list[ModelCard]:
        return list(self._pinned)

    @property
    def is_loading(self) -> bool:
        """True while the models named at start are loading."""
        return self._is_loading

    def is_served(self, card: ModelCard) -> bool:
        return card.id in self._pinned_ids or is_servable(card)

    def states(self) -> dict[str, str]:
        """The state of each model named at start and each other one in memory: `loading`, `ready`, `unloaded`, or
        `failed: <why>`."""
        ids = [*self._pinned_ids, *(card_id for card_id in self._slots if card_id not in self._pinned_ids)]
        return {card_id: self._state(card_id) for card_id in sorted(ids, key=self._order)}

    def _order(self, card_id: str) -> int:
        return next((index for index, card in enumerate(self._pinned) if card.id == card_id), len(self._pinned))

    def _state(self, card_id: str) -> str:
        slot = self._slots.get(card_id)
        if slot is None:
            if failure := self._failed.get(card_id):
                return f"failed: {failure.message}"
            return "loading" if self._is_loading else "unloaded"
        if isinstance(slot.served, RemoteModel):
            return slot.served.fleet.state()
        if slot.served is None:
            return "loading"
        return "ready" if slot.served.engine.is_alive else f"failed: {_stopped_message(card_id)}"

    def ready_models(self) -> list[AnyServed]:
        return [slot.served for slot in self._slots.values() if slot.served is not None]

    def residents(self) -> list[ResidentModel]:
        now_s = time.monotonic()
        return [ResidentModel(slot.served, slot.num_bytes, slot.num_in_flight,
                              slot.is_pinned or isinstance(slot.served, RemoteModel),
                              self._expires_at(slot, now_s))
                for slot in self._slots.values() if slot.served is not None]

    def _expires_at(self, slot: _Slot, now_s: float) -> float | None:
        if slot.keep_alive_s == FOREVER or isinstance(slot.served, RemoteModel):
            return None
        if slot.num_in_flight or slot.expires_at is None:  # in use: at least its keep_alive from now
            return time.time() + slot.keep_alive_s
        return slot.expires_at

    def replica_stats(self) -> list[ReplicaStats]:
        return [stat for served in self.ready_models() if isinstance(served, RemoteModel)
                for stat in served.fleet.stats()]

    def max_context_tokens(self, card: ModelCard) -> int:
        """The context a request to `card` gets here: the loaded engine's (or upstream's), else the card's own."""
        slot = self._slots.get(card.id)
        return slot.served.max_context_tokens if slot and slot.served else card.context_length

    def adapter(self, name: str) -> tuple[ServedModel, LoraInfo] | None:
        """The loaded model a LoRA adapter of this name belongs to, and the adapter; None if no model has one."""
        for served in self.ready_models():
            if isinstance(served, ServedModel):
                for info in served.engine.lora_adapters:
                    if info.name == name:
                        return served, info
        return None

    def adapter_owner(self, name: str) -> ModelCard | None:
        """The card a LoRA adapter of this name belongs to: a loaded model's, or one a servable card lists."""
        if found := self.adapter(name):
            return found[0].card
        return next((card for card in self.served_cards for ref in card.runtime.loras if ref.name == name), None)

    def get(self, card: ModelCard) -> AnyServed:
        """The model if it is in memory and working; else the error a request to it gets now."""
        slot = self._slots.get(card.id)
        if slot is not None and slot.served is not None:
            self._check_working(slot.served)
            return slot.served
        self._check_servable(card)
        raise NotReady(f"The model `{card.id}` is not loaded yet; retry shortly.", retry_after_s=2)

    def _check_servable(self, card: ModelCard) -> None:
        if failure := self._failed.get(card.id):
            raise failure
        if not self.is_served(card):
            raise ModelUnavailable(missing_weights_message(card), param="model")

    @staticmethod
    def _check_working(served: AnyServed) -> None:
        if isinstance(served, RemoteModel):
            if not served.fleet.num_up:
                raise NoReplica(f"{served.fleet.why_down()}; retry shortly.", retry_after_s=2)
        elif not served.engine.is_alive:
            raise EngineError(_stopped_message(served.card.id))

    # --- loading on demand, and leaving

    async def acquire(self, card: ModelCard, keep_alive_s: float | None = None) -> Lease:
        """A lease on the model, loading it first if it is not in memory (concurrent callers share one load).
        `keep_alive_s` (None: the default, `--keep-alive` or forever for a pinned model) is how long it stays once
        idle, as the last request to end says."""
        self._check_servable(card)
        self._loop = asyncio.get_running_loop()
        slot = self._slots.get(card.id)
        if slot is None:
            slot = self._slots[card.id] = _Slot(
                card, is_pinned=card.id in self._pinned_ids, last_used_s=time.monotonic(),
                keep_alive_s=self._default_keep_alive_s(card))
            slot.loading = asyncio.create_task(self._load(slot), name=f"load {card.id}")
        self._hold(slot, keep_alive_s)
        try:
            if slot.served is None:
                assert slot.loading is not None
                await asyncio.shield(slot.loading)
            assert slot.served is not None
            self._check_working(slot.served)
        except BaseException:
            self._release(slot)
            raise
        return Lease(self, slot)

    def _default_keep_alive_s(self, card: ModelCard) -> float:
        return FOREVER if card.id in self._pinned_ids else self.default_keep_alive_s

    def _hold(self, slot: _Slot, keep_alive_s: float | None) -> None:
        slot.num_in_flight += 1
        slot.last_used_s = time.monotonic()
        slot.expires_at = None
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        # as on Ollama, each request sets it: its own, else the default (forever for a pinned model)
        slot.keep_alive_s = keep_alive_s if keep_alive_s is not None else self._default_keep_alive_s(slot.card)

    def _release(self, slot: _Slot) -> None:
        slot.num_in_flight -= 1
        slot.last_used_s = time.monotonic()
        if slot.num_in_flight or self._slots.get(slot.card.id) is not slot or slot.served is None:
            return
        if slot.keep_alive_s == FOREVER or isinstance(slot.served, RemoteModel):
            return
        slot.expires_at = time.time() + slot.keep_alive_s
        if self._loop is not None and not self._loop.is_closed():  # (a stream dropped unread is released late)
            slot.timer = self._loop.call_later(slot.keep_alive_s, self._expire, slot)

    def _expire(self, slot: _Slot) -> None:
        task = asyncio.create_task(self._unload_if_idle(slot, "idle"))
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def unload(self, card: ModelCard) -> None:
        """Unload the model now (`keep_alive: 0` on an empty request), or as soon as its requests in flight end."""
        slot = self._slots.get(card.id)
        if slot is None:
            return
        slot.keep_alive_s = 0
        if slot.loading is not None and not slot.loading.done():
            try:
                await asyncio.shield(slot.loading)
            except FaiscaError:
                return  # it did not load: nothing to unload
        if slot.num_in_flight == 0:
            await self._unload_if_idle(slot, "keep_alive_0")

    async def _unload_if_idle(self, slot: _Slot, reason: str) -> None:
        async with self._turn:
            if self._slots.get(slot.card.id) is slot and slot.num_in_flight == 0 and slot.served is not None:
                await self._unload(slot, reason)

    async def _unload(self, slot: _Slot, reason: str) -> None:
        """(Under the turn lock.) Out of the table first: a request from now on loads it again, after this."""
        del self._slots[slot.card.id]
        if slot.timer is not None:
            slot.timer.cancel()
        served = slot.served
        logger.info("unloading %s (%s)", slot.card.id, reason)
        await (served.fleet.aclose() if isinstance(served, RemoteModel) else served.engine.close())  # type: ignore[union-attr]
        if self.listener is not None:
            self.listener.model_unloaded(slot.card.id, reason)

    async def _load(self, slot: _Slot, *, at_start: bool = False) -> None:
        card = slot.card
        try:
            async with self._turn:
                await self._make_room(slot)
                started_s = time.perf_counter()
                slot.served = await self._serve(card, at_start=at_start)
                if self.listener is not None:
                    self.listener.model_loaded(card.id, time.perf_counter() - started_s)
        except BaseException as exc:
            if self._slots.get(card.id) is slot:
                del self._slots[card.id]
            if isinstance(exc, FaiscaError):
                logger.error("cannot serve %s: %s", card.id, exc.message)
                raise
            if isinstance(exc, Exception):
                logger.exception("loading %s failed", card.id)
                raise ModelUnavailable(f"The model `{card.id}` failed to load: {exc}") from exc
            raise

    async def _make_room(self, slot: _Slot) -> None:
        """(Under the turn lock.) Evict what the budget needs gone, or refuse the load."""
        card = slot.card
        if card.runtime.engine == "upstream":
            return  # its memory is the upstream's
        if self._estimate_bytes is not None:
            try:
                if card.id not in self._sizes:  # once per card: its files and the settings do not change
                    self._sizes[card.id] = await asyncio.to_thread(self._estimate_bytes, card)
                slot.num_bytes = self._sizes[card.id]
            except (FaiscaError, OSError, ValueError) as exc:  # weights that cannot be read: the load would fail too
                raise ModelUnavailable(f"The model `{card.id}` failed to load: {getattr(exc, 'message', exc)}") from exc
        others = [other.resident() for other in self._slots.values() if other is not slot and other.served is not None
                  and not isinstance(other.served, RemoteModel)]
        room = plan_room(others, slot.num_bytes, budget_bytes=self.budget.max_bytes,
                         max_loaded_models=self.budget.max_loaded_models)
        if room.verdict == "never":
            raise ModelTooLarge(f"The model `{card.id}` cannot be loaded here: {room.reason}.", param="model")
        if room.verdict == "busy":
            raise NoRoom(f"No room to load `{card.id}` now: {room.reason}; retry once their requests end.",
                         retry_after_s=NO_ROOM_RETRY_AFTER_S)
        for model_id in room.evict:
            logger.info("evicting %s to make room for %s", model_id, card.id)
            await self._unload(self._slots[model_id], "evicted")

    async def _serve(self, card: ModelCard, *, at_start: bool) -> AnyServed:
        engine = await asyncio.to_thread(self._load_engine, card)
        if isinstance(engine, Fleet):
            await engine.start()
            return RemoteModel(card, engine)
        try:
            await self._load_adapters(card, engine, at_start=at_start)
            template = None if card.embedding else chat_template_for(card, engine)  # an embedding model chats not
            return ServedModel(card, engine, template, ControlTextEscaper(engine.control_texts))
        except BaseException:
            await engine.close()
            raise

    async def _load_adapters(self, card: ModelCard, engine: Engine, *, at_start: bool) -> None:
        for ref in card.runtime.loras:
            try:
                await engine.load_lora(ref.name, ref.path)
            except FaiscaError as exc:
                message = f"--lora {ref.name}={ref.path}: {exc.message}"
                if at_start and self._on_fatal is not None:
                    self._on_fatal(message)
                raise ModelUnavailable(message) from None
            logger.info("%s: LoRA adapter %s loaded from %s", card.id, ref.name, ref.path)

    async def load_all(self) -> None:
        """Load the models named at start one after another (they share the cores), off the event loop; they stay."""
        try:
            for card in self._pinned:
                slot = self._slots[card.id] = _Slot(card, is_pinned=True, keep_alive_s=FOREVER,
                                                     last_used_s=time.monotonic())
                slot.loading = asyncio.create_task(self._load(slot, at_start=True), name=f"load {card.id}")
                try:
                    await asyncio.shield(slot.loading)
                except FaiscaError as exc:
                    self._failed[card.id] = exc
        finally:
            self._is_loading = False

    async def close(self) -> None:
        for task in self._timers:
            task.cancel()
        for slot in list(self._slots.values()):
            if slot.loading is not None and not slot.loading.done():
                slot.loading.cancel()
            if slot.timer is not None:
                slot.timer.cancel()
            served = slot.served
            if served is not None:
                await (served.fleet.aclose() if isinstance(served, RemoteModel) else served.engine.close())
        self._slots.clear()
