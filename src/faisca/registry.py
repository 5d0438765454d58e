"""The models this server serves: each loads in the background, and is loading, ready, or failed (it did not load,
or its engine stopped since)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from faisca.catalog import Catalog, ModelCard
from faisca.chat.literal import ControlTextEscaper
from faisca.chat.template import ChatTemplate
from faisca.engine.base import Engine, EngineStats, LoraInfo
from faisca.engine.weights import missing_weights_message
from faisca.errors import EngineError, FaiscaError, ModelUnavailable, NoReplica, NotReady
from faisca.fleet import Fleet, ReplicaStats

logger = logging.getLogger("faisca.registry")

EngineLoader = Callable[[ModelCard], Engine | Fleet]


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


class ModelRegistry:
    def __init__(self, catalog: Catalog, served_ids: Iterable[str], load_engine: EngineLoader, *,
                 on_fatal: Callable[[str], None] | None = None) -> None:
        self.catalog = catalog
        self._load_engine = load_engine
        # a LoRA adapter named at start that does not load: the CLI ends the process (one line, exit 2); without it
        # the model fails alone
        self._on_fatal = on_fatal
        self._cards = [catalog.resolve(name) for name in served_ids]
        self._ready: dict[str, AnyServed] = {}
        self._failed: dict[str, FaiscaError] = {}
        self._is_loading = True

    @property
    def served_cards(self) -> list[ModelCard]:
        return list(self._cards)

    @property
    def is_loading(self) -> bool:
        return self._is_loading

    def states(self) -> dict[str, str]:
        """Each served model's state: `loading`, `ready`, or `failed: <why>`."""
        return {card.id: self._state(card.id) for card in self._cards}

    def _state(self, card_id: str) -> str:
        if isinstance(served := self._ready.get(card_id), RemoteModel):
            return served.fleet.state()
        if served:
            return "ready" if served.engine.is_alive else f"failed: {_stopped_message(card_id)}"
        if failure := self._failed.get(card_id):
            return f"failed: {failure.message}"
        return "loading"

    def is_served(self, card: ModelCard) -> bool:
        return any(served.id == card.id for served in self._cards)

    async def load_all(self) -> None:
        """Load the served models one after another (they share the cores), off the event loop."""
        for card in self._cards:
            try:
                engine = await asyncio.to_thread(self._load_engine, card)
                if isinstance(engine, Fleet):
                    await engine.start()
                    self._ready[card.id] = RemoteModel(card, engine)
                    continue
                await self._load_adapters(card, engine)
                template = None if card.embedding else chat_template_for(card, engine)
                self._ready[card.id] = ServedModel(card, engine, template,
                                                   ControlTextEscaper(engine.control_texts))
            except FaiscaError as exc:
                logger.error("cannot serve %s: %s", card.id, exc.message)
                self._failed[card.id] = exc
            except Exception as exc:
                logger.exception("loading %s failed", card.id)
                self._failed[card.id] = ModelUnavailable(f"The model `{card.id}` failed to load: {exc}")
        self._is_loading = False

    async def _load_adapters(self, card: ModelCard, engine: Engine) -> None:
        for ref in card.runtime.loras:
            try:
                await engine.load_lora(ref.name, ref.path)
            except FaiscaError as exc:
                await engine.close()
                message = f"--lora {ref.name}={ref.path}: {exc.message}"
                if self._on_fatal is not None:
                    self._on_fatal(message)
                raise ModelUnavailable(message) from None
            logger.info("%s: LoRA adapter %s loaded from %s", card.id, ref.name, ref.path)

    def adapter(self, name: str) -> tuple[ServedModel, LoraInfo] | None:
        """The served model a LoRA adapter of this name belongs to, and the adapter; None if no model has one."""
        for served in self._ready.values():
            if isinstance(served, ServedModel):
                for info in served.engine.lora_adapters:
                    if info.name == name:
                        return served, info
        return None

    def ready_models(self) -> list[AnyServed]:
        return list(self._ready.values())

    def replica_stats(self) -> list[ReplicaStats]:
        return [stat for served in self._ready.values() if isinstance(served, RemoteModel)
                for stat in served.fleet.stats()]

    def max_context_tokens(self, card: ModelCard) -> int:
        """The context a request to `card` gets here: the loaded engine's (or upstream's), else the card's own."""
        served = self._ready.get(card.id)
        return served.max_context_tokens if served else card.context_length

    def get(self, card: ModelCard) -> AnyServed:
        if isinstance(served := self._ready.get(card.id), RemoteModel):
            if not served.fleet.num_up:
                raise NoReplica(f"{served.fleet.why_down()}; retry shortly.", retry_after_s=2)
            return served
        if served:
            if not served.engine.is_alive:
                raise EngineError(_stopped_message(card.id))
            return served
        if failure := self._failed.get(card.id):
            raise failure
        if self.is_served(card):
            raise NotReady(f"The model `{card.id}` is still loading; retry shortly.", retry_after_s=2)
        if card.runtime.weights is None:
            raise ModelUnavailable(missing_weights_message(card), param="model")
        raise ModelUnavailable(
            f"The model `{card.id}` is in the catalog but not served here; start the server with `--model {card.id}`.",
            param="model",
        )

    async def close(self) -> None:
        for served in self._ready.values():
            await (served.fleet.aclose() if isinstance(served, RemoteModel) else served.engine.close())
        self._ready.clear()
