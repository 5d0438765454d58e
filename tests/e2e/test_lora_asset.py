"""The random LoRA adapters of tests/lora.py against llama.cpp itself: the good one loads and changes the greedy
answer (and changes nothing at scale 0), the mismatched ones are refused without a crash. The engine's LoRA tests
rest on these facts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest
from llama_cpp import _internals

from tests.lora import reference_greedy, write_mismatched_lora, write_tiny_gemma3_lora

pytestmark = pytest.mark.e2e

PROMPT = [2, 818, 5279, 529, 7001, 563]  # <bos>"The capital of France is"
NUM_TOKENS = 8


@pytest.fixture(scope="module")
def adapter(gemma_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gemma3_lora(tmp_path_factory.mktemp("lora") / "tiny.gguf", base_gguf=gemma_gguf)


@pytest.fixture(scope="module")
def model(gemma_gguf: Path) -> Iterator[_internals.LlamaModel]:
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = False  # as faisca loads it (AMX buffers crash here)
    loaded = _internals.LlamaModel(path_model=str(gemma_gguf), params=params, verbose=False)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def base_answer(gemma_gguf: Path) -> list[int]:
    return reference_greedy(gemma_gguf, None, PROMPT, NUM_TOKENS)


def test_the_adapter_loads(model: _internals.LlamaModel, adapter: Path) -> None:
    loaded = llama_cpp.llama_adapter_lora_init(model.model, str(adapter).encode())
    assert loaded  # a ctypes pointer: NULL is falsy, never None (llama-cpp-python's own `is None` check misses it)
    llama_cpp.llama_adapter_lora_free(loaded)


@pytest.mark.parametrize("kind", ["shape", "arch", "tensor"])
def test_a_mismatched_adapter_is_refused(model: _internals.LlamaModel, gemma_gguf: Path, tmp_path: Path,
                                         kind: str) -> None:
    path = write_mismatched_lora(tmp_path / f"{kind}.gguf", base_gguf=gemma_gguf, kind=kind)
    assert not llama_cpp.llama_adapter_lora_init(model.model, str(path).encode())


def test_the_adapter_changes_the_greedy_answer_early(gemma_gguf: Path, adapter: Path, base_answer: list[int]) -> None:
    assert reference_greedy(gemma_gguf, adapter, PROMPT, NUM_TOKENS) != base_answer


def test_at_scale_zero_the_adapter_changes_nothing(gemma_gguf: Path, adapter: Path, base_answer: list[int]) -> None:
    assert reference_greedy(gemma_gguf, adapter, PROMPT, NUM_TOKENS, scale=0.0) == base_answer
