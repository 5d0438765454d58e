"""Which engine runs a card: dispatched on the card's `runtime.engine`, never on the model's name."""

from __future__ import annotations

from faisca.catalog import ModelCard
from faisca.engine.base import Engine
from faisca.engine.weights import resolve_gguf
from faisca.registry import EngineLoader


def engine_loader(*, num_threads: int, max_context_tokens: int) -> EngineLoader:
    def load(card: ModelCard) -> Engine:
        match card.runtime.engine:
            case "llama_cpp":
                from faisca.engine.llama_cpp import LlamaCppEngine

                return LlamaCppEngine.load(
                    resolve_gguf(card),
                    name=card.id,
                    max_context_tokens=min(card.context_length, max_context_tokens),
                    num_threads=num_threads,
                )
        raise AssertionError(f"unknown engine {card.runtime.engine!r}")

    return load
