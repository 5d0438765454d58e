"""Pure converters between OpenAI wire bodies and faisca's neutral types, named by direction."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from faisca.catalog import ModelCard
from faisca.errors import UnsupportedCapability
from faisca.service import ChatResult
from faisca.types import (
    ChatEnd,
    ChatEvent,
    ChatRequest,
    ChoiceEnd,
    ContentPart,
    ImagePart,
    Message,
    SamplingParams,
    TextDelta,
    TextPart,
    ToolCall,
    Usage,
)
from faisca.api.openai.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    PromptTokensDetails,
    UsageInfo,
)

logger = logging.getLogger("faisca.api.openai")

# Fields faisca reads; others are accepted (clients send many) and logged.
KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "temperature", "top_p", "top_k", "min_p", "n", "stream", "stream_options",
        "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty", "repetition_penalty",
        "stop", "seed", "user", "logit_bias", "tools", "response_format", "logprobs", "top_logprobs",
    }
)


def without_null_message_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Clients echo earlier assistant messages back with `"tool_calls": null` (or `[]`), `"name": null`...:
    such keys mean "absent", so they are dropped before validation."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    cleaned = [
        {key: value for key, value in message.items() if value is not None and not (key == "tool_calls" and value == [])}
        if isinstance(message, dict) else message
        for message in messages
    ]
    return {**body, "messages": cleaned}


def _content_from_wire(content: Any) -> str | tuple[ContentPart, ...] | None:
    if content is None or isinstance(content, str):
        return content
    parts: list[ContentPart] = []
    for part in content:
        if part["type"] == "text":
            parts.append(TextPart(part["text"]))
        else:
            parts.append(ImagePart(part["image_url"]["url"]))
    return tuple(parts)


def _message_from_wire(message: Mapping[str, Any]) -> Message:
    tool_calls = tuple(
        ToolCall(call["id"], call["function"]["name"], call["function"]["arguments"])
        for call in message.get("tool_calls") or ()
    )
    return Message(
        role=message["role"],
        content=_content_from_wire(message.get("content")),
        tool_calls=tool_calls,
        tool_call_id=message.get("tool_call_id"),
    )


def _stop_from_wire(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def _or_default(body: Mapping[str, Any], key: str, default: Any) -> Any:
    value = body.get(key)
    return default if value is None else value


def _refuse_unimplemented(body: Mapping[str, Any], card: ModelCard) -> None:
    """Features a client would silently lose are refused instead, until faisca implements them."""
    if body.get("tools"):
        raise UnsupportedCapability(f"tools: tool calling is not implemented yet for `{card.id}`.", param="tools")
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") not in (None, "text"):
        raise UnsupportedCapability(
            f"response_format: `{response_format.get('type')}` is not implemented yet; only `text`.", param="response_format"
        )
    if body.get("logprobs") or body.get("top_logprobs"):
        raise UnsupportedCapability("logprobs: token log probabilities are not implemented yet.", param="logprobs")


def to_chat_request(body: Mapping[str, Any], card: ModelCard) -> ChatRequest:
    """A body that passed the card's schema, as a neutral `ChatRequest`."""
    _refuse_unimplemented(body, card)
    if unknown := sorted(set(body) - KNOWN_FIELDS):
        logger.info("ignoring request fields faisca does not use: %s", ", ".join(unknown))
    top_k = _or_default(body, "top_k", 0)
    sampling = SamplingParams(
        temperature=_or_default(body, "temperature", 1.0),
        top_p=_or_default(body, "top_p", 1.0),
        top_k=max(top_k, 0),
        min_p=_or_default(body, "min_p", 0.0),
        presence_penalty=_or_default(body, "presence_penalty", 0.0),
        frequency_penalty=_or_default(body, "frequency_penalty", 0.0),
        repeat_penalty=_or_default(body, "repetition_penalty", 1.0),
        seed=body.get("seed"),
        # LangChain sends only max_completion_tokens; it wins when both are given, as in OpenAI's API.
        max_tokens=_or_default(body, "max_completion_tokens", body.get("max_tokens")),
        stop=_stop_from_wire(body.get("stop")),
        logit_bias=tuple((int(token), float(bias)) for token, bias in (body.get("logit_bias") or {}).items()),
    )
    return ChatRequest(
        model_id=card.id,
        messages=tuple(_message_from_wire(message) for message in body["messages"]),
        sampling=sampling,
        num_choices=_or_default(body, "n", 1),
    )


def to_usage_info(usage: Usage) -> UsageInfo:
    details = PromptTokensDetails(cached_tokens=usage.cached_prompt_tokens) if usage.cached_prompt_tokens else None
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        total_tokens=usage.total_tokens,
        completion_tokens=usage.completion_tokens,
        prompt_tokens_details=details,
    )


def to_chat_completion(result: ChatResult, *, completion_id: str, created: int, model: str) -> ChatCompletion:
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        choices=[
            Choice(
                index=choice.index,
                message=AssistantMessage(content=choice.text),
                finish_reason=choice.finish_reason,
                stop_reason=choice.stop_reason,
            )
            for choice in result.choices
        ],
        usage=to_usage_info(result.usage),
    )


async def to_chunks(
    events: AsyncIterator[ChatEvent],
    *,
    completion_id: str,
    created: int,
    model: str,
    num_choices: int,
    include_usage: bool,
) -> AsyncIterator[ChatCompletionChunk]:
    """The stream of `chat.completion.chunk`s: a role delta per choice first, then content, then the ends, then
    (with `include_usage`) one chunk with no choices carrying the usage."""

    def chunk(choices: list[ChunkChoice], usage: UsageInfo | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=completion_id, created=created, model=model, choices=choices, usage=usage)

    for index in range(num_choices):
        yield chunk([ChunkChoice(index=index, delta=Delta(role="assistant", content=""))])
    async for event in events:
        match event:
            case TextDelta(choice_index=index, text=text):
                yield chunk([ChunkChoice(index=index, delta=Delta(content=text))])
            case ChoiceEnd(choice_index=index, finish_reason=finish_reason, stop_reason=stop_reason):
                yield chunk(
                    [ChunkChoice(index=index, delta=Delta(), finish_reason=finish_reason, stop_reason=stop_reason)]
                )
            case ChatEnd(usage=usage) if include_usage:
                yield chunk([], to_usage_info(usage))
