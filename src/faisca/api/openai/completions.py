"""Pure converters for the legacy completion API (`/v1/completions`): a text prompt in, its continuation out.

The prompt goes to the model as it is (no chat template), as a raw chat request: the same engine, sampling and
event stream as chat. What the legacy API has that chat has not: `echo` (the prompt in front of the text), `logprobs`
as a number of alternatives with the answer in four parallel lists, and `max_tokens` 16 when not given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from faisca.api.openai.convert import (
    grammar_from_wire, int_or_default, lora_from_wire, sampling_from_wire, to_usage_info,
)
from faisca.api.openai.protocol import Completion, CompletionChoice, CompletionLogprobs
from faisca.catalog import ModelCard
from faisca.errors import UnsupportedCapability
from faisca.lifecycle.keep_alive import parse_keep_alive
from faisca.service import ChatResult
from faisca.types import ChatEnd, ChatEvent, ChatRequest, ChoiceEnd, LogprobsDelta, SampledLogprobs, TextDelta

DEFAULT_MAX_TOKENS = 16  # OpenAI's and vLLM's, for this API


def prompt_text(body: Mapping[str, Any]) -> str:
    """The one prompt of a body that passed the completion schema (a string, or a list holding one)."""
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return prompt
    if len(prompt) > 1:
        raise UnsupportedCapability("prompt: one prompt per request; send the others in requests of their own.",
                                    param="prompt")
    return str(prompt[0])


def to_completion_request(body: Mapping[str, Any], card: ModelCard) -> ChatRequest:
    """A body that passed the card's completion schema, as a raw (untemplated) `ChatRequest`."""
    if body.get("suffix"):
        raise UnsupportedCapability("suffix: inserting text (fill-in-the-middle) is not supported.", param="suffix")
    num_choices = int_or_default(body, "n", 1) or 1
    if body.get("best_of") not in (None, num_choices):
        raise UnsupportedCapability("best_of: only `best_of` equal to `n` is supported.", param="best_of")
    if body.get("echo") and body.get("logprobs") is not None:
        raise UnsupportedCapability("echo: with `logprobs` it needs the prompt's log probabilities, which are not "
                                    "implemented; ask without `echo`.", param="echo")
    sampling = sampling_from_wire(body, top_logprobs=int_or_default(body, "logprobs", None),
                                  default_max_tokens=DEFAULT_MAX_TOKENS)
    return ChatRequest(card.id, (), sampling, num_choices, grammar=grammar_from_wire(body),
                       raw_prompt=prompt_text(body), cache_salt=body.get("cache_salt"), lora=lora_from_wire(body),
                       keep_alive_s=parse_keep_alive(body.get("keep_alive")))


class _LegacyLogprobs:
    """One choice's log-probabilities in the legacy lists, with each token's offset in the choice's text."""

    def __init__(self, start_offset: int) -> None:
        self._offset = start_offset

    def lists(self, entries: Sequence[SampledLogprobs]) -> CompletionLogprobs:
        tokens, offsets = [], []
        for entry in entries:
            token = entry.chosen.token_text
            tokens.append(token)
            offsets.append(self._offset)
            self._offset += len(token)
        top = [{**{t.token_text: t.logprob for t in entry.top},
                token: entry.chosen.logprob} for token, entry in zip(tokens, entries, strict=True)]
        return CompletionLogprobs(tokens=tokens, token_logprobs=[entry.chosen.logprob for entry in entries],
                                  top_logprobs=top, text_offset=offsets)


def to_completion(result: ChatResult, *, completion_id: str, created: int, model: str, echo: str) -> Completion:
    """The non-streaming answer; `echo`: the prompt text to put in front of each choice's text ("" for none)."""
    return Completion(
        id=completion_id, created=created, model=model, usage=to_usage_info(result.usage),
        choices=[
            CompletionChoice(
                index=choice.index, text=echo + choice.text, finish_reason=choice.finish_reason,
                stop_reason=choice.stop_reason,
                logprobs=None if choice.logprobs is None else _LegacyLogprobs(len(echo)).lists(choice.logprobs),
            )
            for choice in result.choices
        ],
    )


async def to_completion_chunks(
    events: AsyncIterator[ChatEvent], *, completion_id: str, created: int, model: str, echo: str,
    num_choices: int, include_usage: bool,
) -> AsyncIterator[Completion]:
    """The stream: the echoed prompt first (if asked), then each choice's text as it comes, then its end, then (with
    `include_usage`) one chunk with no choices carrying the usage. Log-probabilities ride with the chunk carrying
    their text, or a later one."""
    pending: dict[int, list[SampledLogprobs]] = {}
    legacy = {index: _LegacyLogprobs(len(echo)) for index in range(num_choices)}

    def chunk(index: int, text: str, **end: Any) -> Completion:
        entries = pending.pop(index, None)
        logprobs = None if entries is None else legacy[index].lists(entries)
        choice = CompletionChoice(index=index, text=text, logprobs=logprobs, **end)
        return Completion(id=completion_id, created=created, model=model, choices=[choice])

    if echo:
        for index in range(num_choices):
            yield chunk(index, echo)
    async for event in events:
        match event:
            case LogprobsDelta(choice_index=index, logprobs=entry):
                pending.setdefault(index, []).append(entry)
            case TextDelta(choice_index=index, text=text):
                yield chunk(index, text)
            case ChoiceEnd(choice_index=index, finish_reason=finish_reason, stop_reason=stop_reason):
                yield chunk(index, "", finish_reason=finish_reason, stop_reason=stop_reason)
            case ChatEnd(usage=usage) if include_usage:
                yield Completion(id=completion_id, created=created, model=model, choices=[], usage=to_usage_info(usage))
