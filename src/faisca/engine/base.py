"""The engine interface: tokenize, generate (an async stream of typed token events), close.

Aborting a generation is closing its stream (`aclose()`, or cancelling the task iterating it): the
engine stops producing tokens and frees what the sequence held.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias

from faisca.images import DecodedImage
from faisca.types import SampledLogprobs, SamplingParams


@dataclass(frozen=True)
class PromptImage:
    """An image's place in a prompt: `num_tokens` positions from `start`, filled from `chunk` (the engine's
    prepared input for it, opaque here); `digest` identifies its pixels."""

    start: int
    num_tokens: int
    digest: str
    chunk: object


# (adapter id, scale) pairs, sorted by id, no zero scales: the LoRA adapters a sequence is computed under
LoraSet: TypeAlias = tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class LoraInfo:
    """A LoRA adapter loaded for a model: `id` is llama-server's (`"lora": [{"id": ..., "scale": ...}]`), never
    reused for another adapter."""

    id: int
    name: str
    path: Path


@dataclass(frozen=True)
class EnginePrompt:
    """A prompt as the engine takes it: token ids, where an image's positions hold a negative placeholder derived
    from the image's content (so a prefix cache matches the same image, and only it), and the images themselves."""

    tokens: tuple[int, ...]
    images: tuple[PromptImage, ...] = ()
    # prefixes are reused only between prompts of the same salt (vLLM's `cache_salt`)
    cache_salt: str | None = None
    loras: LoraSet = ()  # the adapters it is computed under (none: the base model)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class PromptAccepted:
    """First event of a generation: the prompt is in the context; `num_cached_tokens` were reused."""

    num_cached_tokens: int


@dataclass(frozen=True)
class TokenOut:
    token_id: int
    # Text this token completes, decoded incrementally: never half a UTF-8 character.
    text: str
    # The generation ends here on its own: the model's end-of-generation token or one of the sampling's
    # `stop_token_ids` (whose text, empty here, is not content), or the last token its grammar allows.
    is_end: bool = False
    # Its log-probability (and the likeliest alternatives'), when the sampling asked for them.
    logprobs: SampledLogprobs | None = None
    # Speculative decoding: the draft tokens verified in the step this token opens (0 on the step's later tokens),
    # and whether this token is one of them, agreed with by the target.
    num_drafted: int = 0
    is_accepted_draft: bool = False


EngineEvent: TypeAlias = PromptAccepted | TokenOut


@dataclass(frozen=True)
class EngineStats:
    num_running: int
    num_waiting: int
    num_draft_tokens: int = 0  # speculative decoding: draft tokens verified, since the engine started
    num_accepted_tokens: int = 0  # and those the target agreed with


@dataclass(frozen=True)
class ModelTokens:
    """Token texts a chat template needs."""

    bos_text: str
    eos_text: str
    # the BOS token the engine puts first in a prompt, if the model wants one (a continued context has it already)
    added_bos: int | None = None


class Constraint(Protocol):
    """What the output may be, token by token (a compiled grammar)."""

    def accept(self, token: int) -> bool: ...


class Engine(Protocol):
    @property
    def max_context_tokens(self) -> int: ...

    @property
    def tokens(self) -> ModelTokens: ...

    @property
    def chat_template_source(self) -> str | None:
        """The chat template the weights carry, if any."""
        ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def metadata(self) -> Mapping[str, str]:
        """The weights' metadata (GGUF keys such as `general.architecture`)."""
        ...

    @property
    def stats(self) -> EngineStats: ...

    @property
    def is_alive(self) -> bool:
        """Whether the engine can still generate. Once False (its thread died, or it was closed) it stays False, and
        `generate` fails at once with EngineError; so do the generations it had in flight or waiting."""
        ...

    @property
    def image_marker(self) -> str | None:
        """The text that stands for an image in a rendered prompt; None when the model reads no images."""
        ...

    @property
    def control_texts(self) -> frozenset[str]:
        """The texts of the tokens that a prompt's text becomes only when special tokens are parsed (`<start_of_turn>`):
        a client's text holding one is marked literal (`faisca.types.LITERAL_OPEN`) before it is rendered."""
        ...

    def encode_prompt(self, prompt: str, images: Sequence[DecodedImage] = ()) -> EnginePrompt:
        """A rendered prompt, its `image_marker`s standing for `images` in order, as the engine takes it: special
        tokens in the text parsed (but between LITERAL_OPEN and LITERAL_CLOSE), BOS added only if the model wants one and the text lacks it (blocking with images:
        they are resized and normalised here). InvalidRequest if the markers and images do not match."""
        ...

    def compile_constraint(self, grammar: str, *, param: str | None = None) -> Constraint:
        """A grammar (llguidance's Lark dialect) compiled for this model; InvalidRequest if it cannot be."""
        ...

    def generate(
        self, prompt: EnginePrompt, sampling: SamplingParams, max_new_tokens: int,
        constraint: Constraint | None = None,
    ) -> AsyncIterator[EngineEvent]: ...

    @property
    def lora_adapters(self) -> list[LoraInfo]:
        """The LoRA adapters loaded for this model, by id."""
        ...

    async def load_lora(self, name: str, path: Path) -> LoraInfo:
        """Load a GGUF LoRA adapter for this model under `name`; InvalidRequest if it does not fit the model or the
        name is taken, Overloaded while every resident adapter is in use."""
        ...

    async def unload_lora(self, name: str) -> None:
        """Unload an adapter: no new request can name it; the requests using it finish with it."""
        ...

    async def close(self) -> None: ...
