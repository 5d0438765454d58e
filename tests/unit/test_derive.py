"""Cards derived from a GGUF's metadata (`faisca serve --gguf FILE [--mmproj FILE] [--name ID]`)."""

from __future__ import annotations

from pathlib import Path

from faisca.catalog import Catalog
from faisca.catalog.derive import card_from_gguf
from faisca.cli.main import _with_local_gguf

GEMMA3_4B = {
    "general.architecture": "gemma3", "general.name": "Gemma 3 4b It", "general.size_label": "4B",
    "general.file_type": "15", "general.license": "gemma", "gemma3.context_length": "131072",
}


def test_a_gguf_without_a_template_gets_the_one_shipped_for_its_architecture() -> None:
    card = card_from_gguf(GEMMA3_4B, gguf_path=Path("/m/gemma-3-4b-it-Q4_K_M.gguf"), shipped_templates={"gemma3"})
    assert (card.id, card.name, card.version, card.size) == ("gemma-3-4b-it-q4_k_m", "Gemma 3 4b It", "4B Q4_K_M", "4B parameters")
    assert (card.context_length, card.license, card.input, card.tool_format) == (131072, "gemma", "text", "react")
    assert card.runtime.chat_template == "gemma3" and card.runtime.projector is None


def test_a_projector_makes_it_read_images_and_a_name_is_its_id() -> None:
    card = card_from_gguf({**GEMMA3_4B, "tokenizer.chat_template": "{{ messages }}"}, gguf_path=Path("/m/x.gguf"),
                          projector_path=Path("/m/mmproj.gguf"), model_id="my-gemma", shipped_templates={"gemma3"})
    assert card.id == "my-gemma" and card.accepts_images
    assert card.runtime.chat_template is None  # the file's own
    assert card.runtime.projector is not None and card.runtime.projector.path == Path("/m/mmproj.gguf")  # type: ignore[union-attr]


def test_sparse_metadata_still_makes_a_card() -> None:
    card = card_from_gguf({"general.architecture": "mystery"}, gguf_path=Path("/m/thing.gguf"))
    assert (card.id, card.name, card.version, card.context_length) == ("thing", "thing", "local", 4096)
    assert card.runtime.chat_template is None


def test_a_name_the_catalog_knows_runs_that_card_from_the_file(catalog: Catalog, tmp_path: Path) -> None:
    gguf, projector = tmp_path / "gemma-3-27b-it.gguf", tmp_path / "mmproj.gguf"
    projector.write_bytes(b"")
    updated, model_id = _with_local_gguf(catalog, gguf, projector, "gemma3:27b")
    card = updated.resolve(model_id)
    assert model_id == "ista-daslab-gemma-3-27b-it-gptq-4b-128g" and card.accepts_images
    assert card.runtime.weights.path == gguf and card.runtime.projector.path == projector  # type: ignore[union-attr]
    assert card.runtime.chat_template == "gemma3"  # the card's own facts stay
