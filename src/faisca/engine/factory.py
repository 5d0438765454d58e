"""Which engine runs a card: dispatched on the card's `runtime.engine`, never on the model's name."""

from __future__ import annotations

from faisca.catalog import ModelCard
from faisca.config import Settings
from faisca.engine.base import Engine
from faisca.engine.speculative import SpeculationConfig
from faisca.fleet import Fleet
from faisca.engine.weights import resolve_gguf, resolve_projector
from faisca.lifecycle import KvCacheLayout, estimate_memory
from faisca.registry import EngineLoader, MemoryEstimator


def engine_loader(settings: Settings, *, num_threads: int) -> EngineLoader:
    def load(card: ModelCard) -> Engine | Fleet:
        """(Blocking.) The card's engine, loaded."""
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
                    # the draft (its vocabulary checked at start) drafts for the models named at start only
                    speculation=speculation_config(settings) if (
                        settings.speculation != "draft" or card.id in settings.model_ids) else None,
                    draft_path=settings.draft_gguf,
                )
        raise AssertionError(f"unknown engine {card.runtime.engine!r}")

    return load


def speculation_config(settings: Settings) -> SpeculationConfig | None:
    if settings.speculation is None:
        return None
    return SpeculationConfig(method=settings.speculation, max_draft_tokens=settings.max_draft_tokens,  # type: ignore[arg-type]
                             max_sequences=settings.max_speculating_seqs)


def kv_cache_tokens_for(card: ModelCard, settings: Settings) -> int:
    """The KV cache the engine of `card` gets: `--kv-cache-tokens`, at least one full context."""
    max_context_tokens = min(card.context_length, settings.max_context_tokens)
    return max(settings.kv_cache_tokens or max_context_tokens, max_context_tokens)


def memory_estimator(settings: Settings) -> MemoryEstimator:
    def estimate(card: ModelCard) -> int:
        """(Blocking: reads the GGUF's header.) The bytes the card's engine takes once loaded (`faisca.lifecycle.memory`);
        0 for a model served upstream."""
        if card.runtime.engine != "llama_cpp":
            return 0
        from faisca.engine.llama_cpp import read_gguf_header

        gguf = resolve_gguf(card)
        metadata, vocab_size = read_gguf_header(gguf)
        projector = resolve_projector(card)
        return estimate_memory(weights_bytes=gguf.stat().st_size, layout=KvCacheLayout.from_metadata(metadata),
                               kv_cache_tokens=kv_cache_tokens_for(card, settings), vocab_size=vocab_size,
                               projector_bytes=projector.stat().st_size if projector else 0).total_bytes

    return estimate
