"""A scripted engine for service and app tests: fine for orchestration logic, never the only test of a feature."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from faisca.engine.base import EngineEvent, EnginePrompt, EngineStats, ModelTokens, PromptAccepted, TokenOut
from faisca.errors import EngineError
from faisca.types import SamplingParams

CHATML = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


class ScriptedEngine:
    """Emits the given texts as tokens, optionally ending the turn; records what it was asked."""

    def __init__(self, texts: Sequence[str], *, ends_turn: bool = True, template: str | None = CHATML,
                 fail_after: int | None = None) -> None:
        self.texts = list(texts)
        self.fail_after = fail_after
        self.ends_turn = ends_turn
        self.template = template
        self.calls: list[tuple[list[int], SamplingParams, int]] = []
        self.num_closed_streams = 0
        self.is_closed = False

    max_context_tokens = 64
    vocab_size = 100
    metadata = {"general.architecture": "scripted"}
    stats = EngineStats(0, 0)
    tokens = ModelTokens(bos_text="<s>", eos_text="</s>")
    image_marker = None
    control_texts = frozenset({"<|im_start|>"})
    is_alive = True
    lora_adapters: list[object] = []  # LoRA needs llama.cpp: tests/e2e/test_lora.py

    @property
    def chat_template_source(self) -> str | None:
        return self.template

    def encode_prompt(self, prompt: str, images: Sequence[object] = ()) -> EnginePrompt:
        assert not images, "the scripted engine reads no images"
        return EnginePrompt(tuple(range(len(prompt.split()))))

    def compile_constraint(self, grammar: str, *, param: str | None = None) -> object:
        return grammar

    async def generate(self, prompt: EnginePrompt, sampling: SamplingParams, max_new_tokens: int,
                       constraint: object = None) -> AsyncIterator[EngineEvent]:
        self.calls.append((list(prompt.tokens), sampling, max_new_tokens))
        try:
            yield PromptAccepted(num_cached_tokens=0)
            for index, text in enumerate(self.texts[:max_new_tokens]):
                if index == self.fail_after:
                    raise EngineError("generation failed: the engine broke")  # as LlamaCppEngine reports it
                yield TokenOut(index, text)
            if self.ends_turn and len(self.texts) < max_new_tokens:
                yield TokenOut(99, "", is_end=True)
        finally:
            self.num_closed_streams += 1

    async def close(self) -> None:
        self.is_closed = True
