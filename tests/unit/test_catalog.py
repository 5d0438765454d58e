from __future__ import annotations

from pathlib import Path

import pytest

from faisca.catalog import Catalog, ModelCard, slugify
from faisca.catalog.catalog import CardError, load_cards
from faisca.errors import ModelNotFound


@pytest.mark.parametrize(
    ("hf_id", "slug"),
    [
        ("ISTA-DASLab/gemma-3-27b-it-GPTQ-4b-128g", "ista-daslab-gemma-3-27b-it-gptq-4b-128g"),
        ("casperhansen/mistral-small-24b-instruct-2501-awq", "casperhansen-mistral-small-24b-instruct-2501-awq"),
        ("Qwen/Qwen2.5-VL-3B-Instruct-AWQ", "qwen-qwen2-5-vl-3b-instruct-awq"),
    ],
)
def test_slug_is_the_lowercased_hf_id_with_slashes_and_dots_as_dashes(hf_id: str, slug: str) -> None:
    assert slugify(hf_id) == slug


def test_shipped_cards(catalog: Catalog) -> None:
    assert {card.id for card in catalog} == {
        "google-gemma-3-270m",
        "huggingfacetb-smollm2-135m-instruct",
        "ista-daslab-gemma-3-27b-it-gptq-4b-128g",
        "casperhansen-mistral-small-24b-instruct-2501-awq",
        "google-embeddinggemma-300m",
    }
    gemma = catalog.resolve("ista-daslab-gemma-3-27b-it-gptq-4b-128g")
    assert (gemma.context_length, gemma.input, gemma.tool_calling, gemma.lora, gemma.long_term_support) == (
        131072, "text+image", False, True, True)
    assert gemma.runtime.weights is None
    mistral = catalog.resolve("casperhansen/mistral-small-24b-instruct-2501-awq")
    assert (mistral.context_length, mistral.input, mistral.tool_calling, mistral.lora, mistral.license) == (
        32768, "text", True, False, "Apache 2.0")
    assert catalog.resolve("gemma3:270m").runtime.chat_template == "gemma3"
    embedder = catalog.resolve("embeddinggemma")  # the catalog says which models are embedding models
    assert embedder.embedding and embedder.embedding_dimensions == (512, 256, 128) and embedder.tool_format is None
    assert not any(card.embedding for card in catalog if card.id != embedder.id)


@pytest.mark.parametrize("name", ["google-gemma-3-270m", "google/gemma-3-270m", "GOOGLE/Gemma-3-270m", "gemma3:270m", "google/gemma.3.270m"])
def test_resolve_by_slug_hf_id_alias_any_case(catalog: Catalog, name: str) -> None:
    assert catalog.resolve(name).id == "google-gemma-3-270m"


def test_unknown_model_is_model_not_found(catalog: Catalog) -> None:
    with pytest.raises(ModelNotFound) as caught:
        catalog.resolve("gpt-5")
    assert caught.value.status_code == 404 and caught.value.param == "model"


def test_cards_are_strict(tmp_path: Path) -> None:
    good = (Path(__file__).parents[2] / "src/faisca/catalog/cards/google-gemma-3-270m.toml").read_text()
    (tmp_path / "bad.toml").write_text(good.replace('license = "Gemma"', 'license = "Gemma"\nlicence = "typo"'))
    with pytest.raises(CardError, match="licence"):
        load_cards(tmp_path)
    (tmp_path / "bad.toml").write_text(good.replace("context_length = 32768", 'context_length = "32k"'))
    with pytest.raises(CardError, match="context_length"):
        load_cards(tmp_path)


def test_a_user_card_directory_adds_and_replaces_cards(tmp_path: Path) -> None:
    card = ModelCard.model_validate({
        "name": "Tiny", "version": "1", "category": "LLM", "size": "1M parameters", "hf_id": "acme/Tiny-1.0",
        "license": "MIT", "tool_calling": False, "long_term_support": False, "context_length": 512, "lora": False,
        "input": "text",
    })
    (tmp_path / "tiny.toml").write_text("\n".join(f"{k} = {v!r}".replace("'", '"').replace("False", "false")
                                                  for k, v in card.model_dump(exclude={"id", "runtime", "aliases", "tool_format", "embedding_dimensions"}).items()))
    catalog = Catalog.from_dirs(tmp_path)
    assert catalog.resolve("acme/tiny-1.0").id == "acme-tiny-1-0"
    assert len(catalog) == 6


def test_weights_path_override(catalog: Catalog, tmp_path: Path) -> None:
    updated = catalog.with_weights_path("gemma3:27b", tmp_path / "g.gguf")
    weights = updated.resolve("gemma3:27b").runtime.weights
    assert weights is not None and weights.kind == "path"
    assert catalog.resolve("gemma3:27b").runtime.weights is None
