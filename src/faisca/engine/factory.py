"""Which engine runs a card: dispatched on the card's `runtime.engine`, never on the model's name."""

from __future__ import annotations

from faisca.catalog import ModelCard
from faisca.config import Settings
from faisca.engine.base import Engine
from faisca.fleet import Fleet
from faisca.engine.weights import resolve_gguf, resolve_projector
from faisca.registry import EngineLoader


def engine_loader(settings: Settings, *, num_threads: int) -> EngineLoader:
    def load(card: ModelCard) -> Engine | Fleet:
        match card.runtime.engine:
            case "upstream":
                return Fleet(card.id, card.runtime.urls, wanted_names=(card.id, card.hf_id, *card.aliases),
                             served_name=card.runtime.served_name, api_key=settings.upstream_api_key)
            case "llama_cpp":
                from faisca.engine.llama_cpp import LlamaCppEngine

                return LlamaCppEngine.load(
                    resolve_gguf(card),
                    name=card.id,
                    max_context_tokens=min(card.context_length, settings.max_context_tokens),
                    num_threads=num_threads,
                    max_num_seqs=settings.max_num_seqs,
                    max_batch_tokens=settings.max_batch_tokens,
                    kv_cache_tokens=settings.kv_cache_tokens,
                    projector_path=resolve_projector(card),
                    max_loras=settings.max_loras,
                )
        raise AssertionError(f"unknown engine {card.runtime.engine!r}")

    return load
