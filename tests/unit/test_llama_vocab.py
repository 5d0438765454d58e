"""What needs the real vocabularies (loaded vocab-only, fast): detokenizing, BOS handling, SmolLM2's own template."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_cpp import Llama

from faisca.chat.template import ChatTemplate
from faisca.engine.llama_cpp import IncrementalDetokenizer
from faisca.types import Message

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def gemma_vocab(gemma_gguf: Path) -> Llama:
    return Llama(str(gemma_gguf), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def smollm2_vocab(smollm2_gguf: Path) -> Llama:
    return Llama(str(smollm2_gguf), vocab_only=True, verbose=False)


@pytest.mark.parametrize("text", ["héllo wörld", "日本語のテキスト", "emoji 🎉🦙 and 👩‍👩‍👧", "mixed: ∑ x² — ok"])
def test_detokenizing_one_token_at_a_time_never_splits_a_character(gemma_vocab: Llama, smollm2_vocab: Llama, text: str) -> None:
    for vocab in (gemma_vocab, smollm2_vocab):
        tokens = vocab.tokenize(text.encode(), add_bos=False, special=False)
        detokenizer = IncrementalDetokenizer(lambda token: vocab._model.detokenize([token], special=False))
        pieces = [detokenizer.decode(token) for token in tokens] + [detokenizer.flush()]
        assert "\ufffd" not in "".join(pieces)
        assert "".join(pieces) == text


def test_a_byte_fallback_split_is_held_back(smollm2_vocab: Llama) -> None:
    tokens = smollm2_vocab.tokenize("🦙".encode(), add_bos=False, special=False)
    assert len(tokens) > 1  # the emoji is several byte tokens in this vocabulary
    detokenizer = IncrementalDetokenizer(lambda token: smollm2_vocab._model.detokenize([token], special=False))
    assert [detokenizer.decode(token) for token in tokens[:-1]] == [""] * (len(tokens) - 1)
    assert detokenizer.decode(tokens[-1]) == "🦙"


def test_gemma_gguf_carries_no_chat_template_so_faisca_ships_one(gemma_vocab: Llama) -> None:
    assert "tokenizer.chat_template" not in gemma_vocab.metadata


def test_smollm2_renders_its_own_chatml_template(smollm2_vocab: Llama) -> None:
    source = smollm2_vocab.metadata["tokenizer.chat_template"]
    template = ChatTemplate(source, bos_token="<|im_start|>", eos_token="<|im_end|>")
    rendered = template.render((Message("system", "You are a helpful assistant."), Message("user", "Name the european capitals")))
    assert rendered == (GOLDEN / "smollm2" / "system-user.txt").read_text()
