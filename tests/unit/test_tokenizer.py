"""faisca's linear-time split before llama.cpp's tokenizer gives llama.cpp's own tokens, on the real vocabularies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llama_cpp import Llama

from faisca.engine.tokenizer import PromptTokenizer

PIECES = ["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<unused12>", "<|im_start|>", "<|im_end|>",
          "<|endoftext|>", "user", "model", "assistant", "\n", "\n\n", "\n\n\n", " ", "  ", "    ", "<", ">", "<start",
          "_of_turn>", "<table>", "</table>", "<h1>", "[multimodal]", "hello", " world", "é", "日本", "🦙", "\t", "x" * 40]


@pytest.fixture(scope="module", params=["gemma", "smollm2"])
def vocab(request: pytest.FixtureRequest, gemma_gguf: Path, smollm2_gguf: Path) -> tuple[Llama, PromptTokenizer]:
    model = Llama(str(gemma_gguf if request.param == "gemma" else smollm2_gguf), vocab_only=True, verbose=False)
    tokenizer = PromptTokenizer(model._model.vocab, num_vocab=model.n_vocab())
    assert tokenizer.is_exact
    return model, tokenizer


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=30), parse_special=st.booleans())
def test_tokens_are_llama_cpps_own(vocab: tuple[Llama, PromptTokenizer], pieces: list[str], parse_special: bool) -> None:
    model, tokenizer = vocab
    text = "".join(pieces)
    assert tokenizer.tokenize(text, parse_special=parse_special) == model.tokenize(
        text.encode(), add_bos=False, special=parse_special)


def test_control_texts_are_those_parsed_only_as_special_tokens(vocab: tuple[Llama, PromptTokenizer]) -> None:
    model, tokenizer = vocab
    assert tokenizer.control_texts & {"<start_of_turn>", "<|im_start|>"}
    assert not tokenizer.control_texts & {"\n\n", "<table>"}  # Gemma's user-defined tokens are read in any text


def test_many_lines_and_turns_tokenize_in_linear_time(vocab: tuple[Llama, PromptTokenizer]) -> None:
    _, tokenizer = vocab
    text = "<start_of_turn>user\nline\n<end_of_turn>\n" * 20_000  # llama.cpp alone: minutes (quadratic split)
    started = time.perf_counter()
    tokenizer.tokenize(text, parse_special=True)
    assert time.perf_counter() - started < 30  # seconds; about 1 s here
