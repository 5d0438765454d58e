"""How a model speculates: the command line for the models named at start, else its card; and what its draft
model adds to the memory it takes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from faisca.catalog import Catalog, ModelCard
from faisca.catalog.card import Runtime
from faisca.config import Settings
from faisca.loading import memory_estimator, speculation_for
from faisca.engine.weights import resolve_gguf

CATALOG = Catalog.from_dirs()
GEMMA = CATALOG.resolve("gemma3:270m")


def card(**runtime: object) -> ModelCard:
    fields = GEMMA.model_dump(exclude={"id"})
    fields.update(hf_id="faisca-tests/gemma-3-270m-speculating", aliases=[],
                  runtime={**fields["runtime"], **runtime})
    return ModelCard.model_validate(fields)


@pytest.mark.parametrize("runtime", [{"speculation": "draft"}, {"draft": "gemma3:270m"},
                                     {"speculation": "ngram", "draft": "gemma3:270m"},
                                     {"engine": "upstream", "urls": ["http://gpu-1:8000/v1"], "weights": None,
                                      "speculation": "ngram"}])
def test_a_card_names_a_draft_with_speculation_draft_only(runtime) -> None:
    with pytest.raises(ValidationError):
        Runtime.model_validate({**GEMMA.runtime.model_dump(), **runtime})


def test_the_card_says_it_unless_the_command_line_does() -> None:
    drafting, looking_up = card(speculation="draft", draft="gemma3:270m"), card(speculation="ngram")
    catalog = CATALOG.with_card(drafting)
    assert speculation_for(GEMMA, Settings(), catalog) == (None, None)
    config, draft = speculation_for(drafting, Settings(max_draft_tokens=6), catalog)
    assert config is not None and (config.method, config.max_draft_tokens, draft) == ("draft", 6, resolve_gguf(GEMMA))
    config, draft = speculation_for(looking_up, Settings(), catalog)
    assert config is not None and (config.method, draft) == ("ngram", None)
    # --spec ngram: every model; --draft: the models named at start (theirs checked there), the others as their card
    config, draft = speculation_for(drafting, Settings(speculation="ngram"), catalog)
    assert config is not None and (config.method, draft) == ("ngram", None)
    elsewhere = Settings(speculation="draft", draft_gguf=resolve_gguf(GEMMA), model_ids=(GEMMA.id,))
    assert speculation_for(looking_up, elsewhere, catalog)[0].method == "ngram"  # type: ignore[union-attr]
    config, draft = speculation_for(GEMMA, elsewhere, catalog)
    assert config is not None and (config.method, draft) == ("draft", resolve_gguf(GEMMA))


def test_a_draft_model_counts_in_the_memory_its_target_takes() -> None:
    drafting = card(speculation="draft", draft="gemma3:270m")
    catalog = CATALOG.with_card(drafting)
    estimate = memory_estimator(Settings(max_context_tokens=2048), catalog)
    assert estimate(drafting) == 2 * estimate(GEMMA)  # itself as its own draft, with a context as large
    assert estimate(card(speculation="ngram")) == estimate(GEMMA)
