"""Which engine runs a card (dispatched on the card's `runtime.engine`, never on the model's name), how it speculates,
and what it takes in memory: the engines and the fleet assembled for the registry, above both."""

from __future__ import annotations

from pathlib import Path

from faisca.catalog import Catalog, ModelCard
from faisca.config import Settings
from faisca.engine.base import Engine
from faisca.engine.speculative import SpeculationConfig
from faisca.fleet import Fleet
from faisca.engine.weights import resolve_gguf, resolve_projector
from faisca.lifecycle import KvCacheLayout, estimate_memory
from faisca.registry import EngineLoader, MemoryEstimator


def engine_loader(settings: Settings, catalog: Catalog, *, num_threads: int) -> EngineLoader:
    def load(card: ModelCard) -> Engine | Fleet:
        """(Blocking.) The card's engine, loaded."""
        match card.runtime.engine:
            case "upstream":
                return Fleet(card.id, card.runtime.urls, wanted_names=(card.id, card.hf_id, *card.aliases),
                             served_name=card.runtime.served_name, api_key=settings.upstream_api_key)
            case "llama_cpp":
                from faisca.engine.llama_cpp import LlamaCppEngine

                speculation, draft = speculation_for(card, settings, catalog)  # vocabularies checked at start
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
                    speculation=speculation,
                    draft_path=draft,
                )
        raise AssertionError(f"unknown engine {card.runtime.engine!r}")

    return load


def speculation_for(card: ModelCard, settings: Settings, catalog: Catalog) -> tuple[SpeculationConfig | None,
                                                                                      Path | None]:
    """How the card's engine speculates, and the draft model's GGUF: the command line's `--spec` (its `--draft` for
    the models named at start only: their vocabularies were checked there), else the card's `speculation`, `draft`."""
    if settings.speculation is not None and (settings.speculation != "draft" or card.id in settings.model_ids):
        method, draft_gguf = settings.speculation, settings.draft_gguf
    else:
        method, draft = card.runtime.speculation, card.runtime.draft
        draft_gguf = resolve_gguf(catalog.resolve(draft)) if draft is not None else None
    if method is None:
        return None, None
    config = SpeculationConfig(method=method, max_draft_tokens=settings.max_draft_tokens,  # type: ignore[arg-type]
                               max_sequences=settings.max_speculating_seqs)
    return config, draft_gguf if method == "draft" else None


def kv_cache_tokens_for(card: ModelCard, settings: Settings) -> int:
    """The KV cache the engine of `card` gets: `--kv-cache-tokens`, at least one full context."""
    max_context_tokens = min(card.context_length, settings.max_context_tokens)
    return max(settings.kv_cache_tokens or max_context_tokens, max_context_tokens)


def memory_estimator(settings: Settings, catalog: Catalog) -> MemoryEstimator:
    def estimate(card: ModelCard) -> int:
        """(Blocking: reads the GGUF headers.) The bytes the card's engine takes once loaded (`faisca.lifecycle.memory`),
        its draft model's included; 0 for a model served upstream."""
        if card.runtime.engine != "llama_cpp":
            return 0
        from faisca.engine.llama_cpp import read_gguf_header

        kv_cache_tokens = kv_cache_tokens_for(card, settings)

        def footprint(gguf: Path, projector: Path | None = None) -> int:
            metadata, vocab_size = read_gguf_header(gguf)
            return estimate_memory(weights_bytes=gguf.stat().st_size, layout=KvCacheLayout.from_metadata(metadata),
                                   kv_cache_tokens=kv_cache_tokens, vocab_size=vocab_size,
                                   projector_bytes=projector.stat().st_size if projector else 0).total_bytes

        _, draft = speculation_for(card, settings, catalog)  # its context holds as many tokens as the target's
        return footprint(resolve_gguf(card), resolve_projector(card)) + (footprint(draft) if draft else 0)

    return estimate
