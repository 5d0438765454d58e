"""Neutral domain types shared by every layer.

Wire types (OpenAI, Ollama) live under `faisca.api` only and are converted to and from these by pure
functions. A `ChatRequest` is a *validated* request: only code that checked a wire request builds one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]

# In a rendered prompt, what stands between these marks came from a client and is tokenized as plain text, never as
# control tokens (`chat/literal.py` puts them, the engine reads them). Random per process: no client can type them.
LITERAL_OPEN = f"\ue000{secrets.token_hex(6)}\ue001"
LITERAL_CLOSE = f"\ue001{secrets.token_hex(6)}\ue000"
FinishReason: TypeAlias = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image reference as the client sent it (an http(s) URL or a data URI); fetched and decoded before the
    prompt is built."""

    url: str
    # Where the client put it, for error messages (`images.0`); None: `messages.<i>.content.<j>.image_url`.
    param: str | None = None


ContentPart: TypeAlias = TextPart | ImagePart


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class Tool:
    """A function the model may call; `parameters` is a JSON Schema object (checked against the meta-schema)."""

    name: str
    description: str = ""
    parameters_json: str = '{"type": "object", "properties": {}}'


# "auto" (the model decides), "none" (never), "required" (at least one call), or a tool's name (that call).
ToolChoice: TypeAlias = str


@dataclass(frozen=True)
class ResponseFormat:
    """Structured output: any JSON object (`schema_json` None) or JSON valid against `schema_json`."""

    schema_json: str | None = None


@dataclass(frozen=True)
class Message:
    role: Role
    content: str | tuple[ContentPart, ...] | None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def image_parts(self) -> tuple[ImagePart, ...]:
        if isinstance(self.content, tuple):
            return tuple(part for part in self.content if isinstance(part, ImagePart))
        return ()


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. Neutral defaults: OpenAI's (temperature 1, top_p 1), with top_k and min_p off."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    include_stop_str_in_output: bool = False  # vLLM's: the matched stop string ends the text instead of being cut
    # vLLM's: these tokens end the choice too (finish_reason "stop", stop_reason the token id), their text left out
    stop_token_ids: tuple[int, ...] = ()
    # vLLM's: the model's end-of-generation tokens are never sampled (grammars still end a constrained answer)
    ignore_eos: bool = False
    # vLLM's: before this many tokens, end-of-generation and `stop_token_ids` tokens are not sampled and stop strings
    # do not match
    min_tokens: int = 0
    # (token id, bias added to its logit); -100 bans a token, +100 all but forces it (OpenAI's logit_bias)
    logit_bias: tuple[tuple[int, float], ...] = ()
    # None: no log-probabilities; k: each generated token's log-probability and the k likeliest tokens' at its
    # position (OpenAI's `logprobs: true` with `top_logprobs: k`).
    top_logprobs: int | None = None
    # llama-server's `speculative.n_max`: draft tokens verified per step at most for this request (0: no
    # speculation); None: the server's `--draft-max`. Never changes the text, only the speed.
    max_draft_tokens: int | None = None


@dataclass(frozen=True)
class ChatRequest:
    """A chat request that passed validation against its model's card and schema."""

    model_id: str
    messages: tuple[Message, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    num_choices: int = 1
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    # What the output must match, as a grammar in llguidance's Lark dialect (vLLM's `structured_outputs`); checked
    # when the request was read. Never together with `response_format` or `tools`.
    grammar: str | None = None
    # A prompt sent as is, without the chat template (Ollama's `raw`); `messages` then holds only its images.
    raw_prompt: str | None = None
    # A context for this request smaller than the model's (Ollama's `num_ctx`); None: the model's.
    max_context_tokens: int | None = None
    # Ollama's way with a context too small: the oldest turns are left out until the prompt fits, and the answer
    # stops where the context ends ("length"). Without it such a request is refused (context_length_exceeded).
    fit_context: bool = False
    # vLLM's `cache_salt`: the prompt's cached prefix is shared only with requests of the same salt (None: with those
    # without one), so that one tenant cannot learn another's prompts from how fast its own are answered.
    cache_salt: str | None = None
    # The LoRA adapter the request's `model` named (a name of `/v1/models` whose `parent` is the card); None: the base.
    adapter: str | None = None
    # llama-server's `lora`: (adapter id, scale) pairs, the whole mix (adapters not listed are off); None: not given.
    lora: tuple[tuple[int, float], ...] | None = None
    # Ollama's `context` on /api/generate: the token ids of the conversation so far (a previous answer's `context`),
    # which the rendered prompt continues.
    context: tuple[int, ...] = ()
    # Ollama's `keep_alive` in seconds (math.inf: forever, 0: unload once it ends): how long the model stays in memory
    # once idle; None: the default (the server's `--keep-alive` for a model loaded on demand, forever for a pinned one).
    keep_alive_s: float | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    # speculative decoding: draft tokens verified for this request, and those among its completion tokens
    drafted_tokens: int = 0
    accepted_draft_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# --- Output events of a chat: the one stream both the streaming and the non-streaming answers are built from.


@dataclass(frozen=True)
class TokenLogprob:
    """A token and its log-probability (natural log) in the model's distribution at one position."""

    token_bytes: bytes  # the token's text; a byte-fallback token may hold part of a UTF-8 character
    logprob: float

    @property
    def token_text(self) -> str:
        """The token's text as a string (part of a character shows as U+FFFD)."""
        return self.token_bytes.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class SampledLogprobs:
    """A generated token's log-probability and, when asked for, the likeliest tokens' at its position (likeliest
    first)."""

    chosen: TokenLogprob
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class LogprobsDelta:
    """One generated token's log-probabilities, sent before the text events the token produces."""

    choice_index: int
    logprobs: SampledLogprobs


@dataclass(frozen=True)
class TextDelta:
    choice_index: int
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    choice_index: int
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A call begins: its id, type and name come once, then its arguments in `ToolCallArgumentsDelta`s."""

    choice_index: int
    call_index: int
    call_id: str
    name: str


@dataclass(frozen=True)
class ToolCallArgumentsDelta:
    choice_index: int
    call_index: int
    text: str


@dataclass(frozen=True)
class ChoiceEnd:
    choice_index: int
    finish_reason: FinishReason
    # vLLM's meaning: the stop string (or the `stop_token_ids` token) that ended the choice; None when the model
    # ended it (or the limit did).
    stop_reason: str | int | None = None


@dataclass(frozen=True)
class ChatEnd:
    usage: Usage
    # The conversation's token ids: the prompt, then the first choice's answer (its end token left out); None where
    # they are not known (an upstream's answer) or hold an image.
    tokens: tuple[int, ...] | None = None


ChatEvent: TypeAlias = (
    TextDelta | ReasoningDelta | ToolCallStart | ToolCallArgumentsDelta | LogprobsDelta | ChoiceEnd | ChatEnd
)


@dataclass(frozen=True)
class EmbeddingRequest:
    """An embedding request that passed its surface's schema."""

    model_id: str
    # texts, or token ids (OpenAI takes both); none empty
    inputs: tuple[str | tuple[int, ...], ...]
    # the first `dimensions` components, normalized again (where the card allows it); None: the model's size
    dimensions: int | None = None
    # Ollama's `truncate`: an input longer than the context is cut to fit; else it is refused
    truncate: bool = False
    param: str = "input"  # the field the inputs came in, for error messages
