"""The registry over scripted engines: loads on first request (shared by concurrent ones), keep_alive, unloading,
the memory budget and pinned models. The real engines: tests/e2e/test_on_demand.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from faisca.catalog import Catalog, ModelCard
from faisca.errors import ModelTooLarge, ModelUnavailable, NoRoom
from faisca.lifecycle import FOREVER
from faisca.registry import MemoryBudget, ModelRegistry
from tests.unit.scripted import ScriptedEngine

GEMMA = "google-gemma-3-270m"
SMOLLM2 = "huggingfacetb-smollm2-135m-instruct"


class Loads:
    """A loader that counts loads per model and hands out a fresh scripted engine each time."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.counts: dict[str, int] = {}
        self.engines: list[ScriptedEngine] = []
        self.delay_s = delay_s

    def __call__(self, card: ModelCard) -> ScriptedEngine:
        threading.Event().wait(self.delay_s)
        self.counts[card.id] = self.counts.get(card.id, 0) + 1
        self.engines.append(ScriptedEngine(["a"]))
        return self.engines[-1]


def registry_with(catalog: Catalog, loads: Loads, *, pinned: tuple[str, ...] = (), sizes: dict[str, int] | None = None,
                  budget: MemoryBudget = MemoryBudget(), keep_alive_s: float = 300.0) -> ModelRegistry:
    estimate: Callable[[ModelCard], int] | None = (lambda card: sizes[card.id]) if sizes else None
    return ModelRegistry(catalog, pinned, loads, estimate_bytes=estimate, budget=budget,
                         default_keep_alive_s=keep_alive_s)


def test_every_model_with_weights_is_served_and_the_first_request_loads_it_once(catalog: Catalog) -> None:
    loads = Loads(delay_s=0.2)
    registry = registry_with(catalog, loads)
    assert {card.id for card in registry.served_cards} == {GEMMA, SMOLLM2}
    assert registry.states() == {} and not registry.is_loading

    async def three_first_requests() -> None:
        leases = await asyncio.gather(*(registry.acquire(catalog.resolve("smollm2")) for _ in range(3)))
        assert len({id(lease.served) for lease in leases}) == 1
        for lease in leases:
            lease.release()
            lease.release()  # once only
        assert [resident.num_in_flight for resident in registry.residents()] == [0]

    asyncio.run(three_first_requests())
    assert loads.counts == {SMOLLM2: 1}
    assert registry.states() == {SMOLLM2: "ready"}


def test_a_card_without_weights_is_refused_saying_how_to_serve_it(catalog: Catalog) -> None:
    registry = registry_with(catalog, Loads())
    with pytest.raises(ModelUnavailable, match="--weights"):
        asyncio.run(registry.acquire(catalog.resolve("gemma3:27b")))


def test_an_idle_model_leaves_after_its_keep_alive_and_a_request_resets_the_clock(catalog: Catalog) -> None:
    loads = Loads()
    registry = registry_with(catalog, loads, keep_alive_s=0.3)
    card = catalog.resolve("smollm2")

    async def scenario() -> None:
        lease = await registry.acquire(card)
        await asyncio.sleep(0.5)  # in use: it stays however long
        assert registry.states() == {SMOLLM2: "ready"}
        lease.release()
        (expiry,) = registry.residents()
        assert expiry.expires_at is not None
        await asyncio.sleep(0.15)
        (await registry.acquire(card)).release()  # resets the clock
        await asyncio.sleep(0.2)
        assert registry.states() == {SMOLLM2: "ready"}
        await asyncio.sleep(0.3)
        assert registry.states() == {}
        assert loads.engines[0].is_closed
        (await registry.acquire(card, keep_alive_s=FOREVER)).release()  # loads again, and stays
        await asyncio.sleep(0.4)
        assert registry.states() == {SMOLLM2: "ready"} and registry.residents()[0].expires_at is None

    asyncio.run(scenario())
    assert loads.counts == {SMOLLM2: 2}


def test_keep_alive_0_unloads_at_once_or_when_the_requests_in_flight_end(catalog: Catalog) -> None:
    loads = Loads()
    registry = registry_with(catalog, loads)
    card = catalog.resolve("smollm2")

    async def scenario() -> None:
        (await registry.acquire(card)).release()
        await registry.unload(card)
        assert registry.states() == {} and loads.engines[0].is_closed
        await registry.unload(card)  # not loaded: nothing to do
        lease = await registry.acquire(card)
        await registry.unload(card)
        assert registry.states() == {SMOLLM2: "ready"}  # a request is using it
        lease.release()
        await asyncio.sleep(0.05)
        assert registry.states() == {} and loads.engines[1].is_closed
        (await registry.acquire(card, keep_alive_s=0)).release()  # a request's own keep_alive 0: gone once it ends
        await asyncio.sleep(0.05)
        assert registry.states() == {}

    asyncio.run(scenario())


def test_a_budget_of_one_model_swaps_them_but_never_evicts_one_in_use(catalog: Catalog) -> None:
    loads = Loads()
    registry = registry_with(catalog, loads, budget=MemoryBudget(max_loaded_models=1))
    gemma, smollm2 = catalog.resolve(GEMMA), catalog.resolve(SMOLLM2)

    async def scenario() -> None:
        streaming = await registry.acquire(gemma)
        with pytest.raises(NoRoom) as caught:
            await registry.acquire(smollm2)
        assert caught.value.status_code == 503 and caught.value.retry_after_s > 0
        assert registry.states() == {GEMMA: "ready"}
        streaming.release()
        (await registry.acquire(smollm2)).release()
        assert registry.states() == {SMOLLM2: "ready"} and loads.engines[0].is_closed

    asyncio.run(scenario())


def test_the_byte_budget_evicts_the_least_recently_used_and_refuses_what_never_fits(catalog: Catalog) -> None:
    sizes = {GEMMA: 60, SMOLLM2: 30}
    estimates: list[str] = []

    def estimate(card: ModelCard) -> int:
        estimates.append(card.id)
        return sizes[card.id]

    def registry(max_bytes: int) -> ModelRegistry:
        return ModelRegistry(catalog, (), Loads(), estimate_bytes=estimate, budget=MemoryBudget(max_bytes=max_bytes))

    async def scenario() -> None:
        roomy = registry(100)
        (await roomy.acquire(catalog.resolve(SMOLLM2))).release()
        (await roomy.acquire(catalog.resolve(GEMMA))).release()
        assert sorted(roomy.states()) == [GEMMA, SMOLLM2]  # 90 of 100
        assert sorted(resident.num_bytes for resident in roomy.residents()) == [30, 60]
        await roomy.unload(catalog.resolve(SMOLLM2))
        (await roomy.acquire(catalog.resolve(SMOLLM2))).release()
        assert estimates == [SMOLLM2, GEMMA]  # once per card

        tight = registry(80)
        (await tight.acquire(catalog.resolve(SMOLLM2))).release()
        (await tight.acquire(catalog.resolve(GEMMA))).release()
        assert tight.states() == {GEMMA: "ready"}  # smollm2 left: 30 + 60 > 80

        small = registry(50)
        (await small.acquire(catalog.resolve(SMOLLM2))).release()
        with pytest.raises(ModelTooLarge) as caught:
            await small.acquire(catalog.resolve(GEMMA))
        assert caught.value.status_code == 400 and "memory budget" in caught.value.message
        assert small.states() == {SMOLLM2: "ready"}  # nothing was evicted for it

    asyncio.run(scenario())


def test_pinned_models_load_at_start_stay_and_are_never_evicted(catalog: Catalog) -> None:
    loads = Loads()
    registry = registry_with(catalog, loads, pinned=("smollm2",), budget=MemoryBudget(max_loaded_models=1),
                             keep_alive_s=0.05)
    assert registry.is_loading and registry.states() == {SMOLLM2: "loading"}

    async def scenario() -> None:
        await registry.load_all()
        assert not registry.is_loading
        (await registry.acquire(catalog.resolve(SMOLLM2))).release()
        await asyncio.sleep(0.2)  # --keep-alive is for the others: a pinned model stays
        assert registry.states() == {SMOLLM2: "ready"}
        with pytest.raises(ModelTooLarge, match="pinned"):
            await registry.acquire(catalog.resolve(GEMMA))
        await registry.unload(catalog.resolve(SMOLLM2))  # asked for by name: it goes
        assert registry.states() == {SMOLLM2: "unloaded"}
        (await registry.acquire(catalog.resolve(SMOLLM2))).release()  # and comes back pinned
        await asyncio.sleep(0.2)
        assert registry.states() == {SMOLLM2: "ready"}

    asyncio.run(scenario())


def test_a_load_that_fails_fails_its_waiters_and_the_next_request_tries_again(catalog: Catalog) -> None:
    attempts = []

    def flaky(card: ModelCard) -> ScriptedEngine:
        attempts.append(card.id)
        if len(attempts) == 1:
            raise RuntimeError("disk on fire")
        return ScriptedEngine(["a"])

    registry = ModelRegistry(catalog, (), flaky)

    async def scenario() -> None:
        failures = await asyncio.gather(*(registry.acquire(catalog.resolve(SMOLLM2)) for _ in range(2)),
                                        return_exceptions=True)
        assert all(isinstance(failure, ModelUnavailable) and "disk on fire" in failure.message for failure in failures)
        assert registry.states() == {}
        (await registry.acquire(catalog.resolve(SMOLLM2))).release()

    asyncio.run(scenario())
    assert attempts == [SMOLLM2, SMOLLM2]
