"""Pure converters between OpenAI wire bodies and faisca's neutral types, named by direction."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from faisca.catalog import ModelCard
from faisca.chat.structured import check_grammar, choice_grammar, json_grammar, regex_grammar
from faisca.chat.tooldefs import checked_schema, tools_from_definitions
from faisca.errors import InvalidRequest, UnsupportedCapability
from faisca.lifecycle.keep_alive import parse_keep_alive
from faisca.service import ChatResult
from faisca.types import (
    ChatEnd,
    ChatEvent,
    ChatRequest,
    ChoiceEnd,
    ContentPart,
    ImagePart,
    LogprobsDelta,
    Message,
    ReasoningDelta,
    ResponseFormat,
    SampledLogprobs,
    SamplingParams,
    TextDelta,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallStart,
    Usage,
)
from faisca.api.openai.protocol import (
    AssistantMessage,
    FunctionCall,
    FunctionCallDelta,
    ToolCallDelta,
    ToolCallOut,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    PromptTokensDetails,
    TokenLogprobOut,
    TopLogprob,
    UsageInfo,
)

logger = logging.getLogger("faisca.api.openai")

# Fields faisca reads; others are accepted (clients send many) and logged.
KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "temperature", "top_p", "top_k", "min_p", "n", "stream", "stream_options",
        "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty", "repetition_penalty",
        "stop", "seed", "user", "logit_bias", "tools", "tool_choice", "parallel_tool_calls", "response_format",
        "logprobs", "top_logprobs", "prompt_logprobs", "ignore_eos", "min_tokens", "stop_token_ids",
        "include_stop_str_in_output", "cache_salt", "lora", "structured_outputs", "keep_alive", "speculative.n_max",
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


def int_or_default(body: Mapping[str, Any], key: str, default: int | None) -> int | None:
    """An integer field: JSON Schema's `integer` takes 2.0 too, which Python's ranges and C ints do not."""
    value = body.get(key)
    return default if value is None else int(value)


def _refuse_unimplemented(body: Mapping[str, Any]) -> None:
    """Features a client would silently lose are refused instead, until faisca implements them."""
    if body.get("prompt_logprobs") is not None:
        raise UnsupportedCapability(
            "prompt_logprobs: log probabilities of the prompt's tokens are not implemented; `logprobs` gives the "
            "generated tokens'.", param="prompt_logprobs")


def _top_logprobs_from_wire(body: Mapping[str, Any]) -> int | None:
    """None without `logprobs`; else how many alternatives each token's entry lists (`top_logprobs`, 0 by default)."""
    num_top = int_or_default(body, "top_logprobs", 0)
    if not body.get("logprobs"):
        if num_top:
            raise InvalidRequest("top_logprobs: needs `logprobs` set to true.", param="top_logprobs")
        return None
    return num_top


def _tools_from_wire(body: Mapping[str, Any], card: ModelCard) -> tuple[tuple[Tool, ...], str]:
    tools = tools_from_definitions(body.get("tools") or [])
    choice = body.get("tool_choice") or "auto"
    if isinstance(choice, Mapping):
        choice = choice["function"]["name"]
        if choice not in {tool.name for tool in tools}:
            raise InvalidRequest(f"tool_choice: `{choice}` is not one of the tools.", param="tool_choice")
    elif choice == "required" and not tools:
        raise InvalidRequest("tool_choice: `required` needs `tools`.", param="tool_choice")
    return tuple(tools), choice


def _response_format_from_wire(body: Mapping[str, Any]) -> ResponseFormat | None:
    wire = body.get("response_format")
    if not wire or wire["type"] == "text":
        return None
    if wire["type"] == "json_object":
        return ResponseFormat()
    schema = wire["json_schema"].get("schema")
    if schema is None:
        return ResponseFormat()
    return ResponseFormat(checked_schema(schema, param="response_format.json_schema.schema", what="the schema"))


# The kinds of constraint in vLLM's `structured_outputs`; a request gives exactly one.
STRUCTURED_OUTPUT_KINDS = ("json", "regex", "choice", "grammar", "json_object")


def _json_schema_from_wire(value: Any, *, param: str) -> dict[str, Any]:
    """vLLM's `structured_outputs.json`: a JSON Schema, as an object or as JSON text."""
    if not isinstance(value, str):
        return value  # type: ignore[no-any-return]
    try:
        return json.loads(value)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise InvalidRequest(f"{param}: the schema is not valid JSON: {exc}", param=param) from exc


def grammar_from_wire(body: Mapping[str, Any]) -> str | None:
    """vLLM's `structured_outputs` (both completion APIs) as the grammar the output must match, checked here so that
    a bad one is a 400 naming its field. Exactly one kind of constraint, as vLLM requires."""
    wire = body.get("structured_outputs")
    if wire is None:
        return None
    kinds = [kind for kind in STRUCTURED_OUTPUT_KINDS if wire.get(kind) not in (None, False)]
    if len(kinds) != 1:
        raise InvalidRequest(f"structured_outputs: give exactly one of {', '.join(STRUCTURED_OUTPUT_KINDS)} "
                             f"(got {', '.join(kinds) or 'none'}).", param="structured_outputs")
    kind = kinds[0]
    param = f"structured_outputs.{kind}"
    match kind:
        case "json":
            schema = _json_schema_from_wire(wire["json"], param=param)
            checked_schema(schema, param=param, what="the schema")
            grammar = json_grammar(schema)
        case "regex":
            grammar = regex_grammar(wire["regex"])
        case "choice":
            grammar = choice_grammar(wire["choice"])
        case "grammar":
            grammar = wire["grammar"]
        case _:  # json_object
            grammar = json_grammar(None)
    check_grammar(grammar, param=param)
    return grammar


def _refuse_mixed_constraints(body: Mapping[str, Any]) -> None:
    """`structured_outputs` is the whole constraint on the output: another one beside it is refused, as vLLM does."""
    if body.get("structured_outputs") is None:
        return
    if (body.get("response_format") or {}).get("type", "text") != "text":
        raise InvalidRequest("structured_outputs: cannot be combined with a JSON `response_format`; give one of "
                             "them.", param="structured_outputs")
    if body.get("tools"):
        raise InvalidRequest("structured_outputs: cannot be combined with `tools`; give one of them.",
                             param="structured_outputs")


def to_chat_request(body: Mapping[str, Any], card: ModelCard) -> ChatRequest:
    """A body that passed the card's schema, as a neutral `ChatRequest`."""
    _refuse_unimplemented(body)
    _refuse_mixed_constraints(body)
    tools, tool_choice = _tools_from_wire(body, card)
    if unknown := sorted(set(body) - KNOWN_FIELDS):
        logger.info("ignoring request fields faisca does not use: %s", ", ".join(unknown))
    return ChatRequest(
        model_id=card.id,
        messages=tuple(_message_from_wire(message) for message in body["messages"]),
        sampling=sampling_from_wire(body, top_logprobs=_top_logprobs_from_wire(body)),
        num_choices=int_or_default(body, "n", 1),
        tools=tools,
        tool_choice=tool_choice if tools else "none",
        parallel_tool_calls=_or_default(body, "parallel_tool_calls", True),
        response_format=_response_format_from_wire(body),
        grammar=grammar_from_wire(body),
        cache_salt=body.get("cache_salt"),
        lora=lora_from_wire(body),
        keep_alive_s=parse_keep_alive(body.get("keep_alive")),
    )


def lora_from_wire(body: Mapping[str, Any]) -> tuple[tuple[int, float], ...] | None:
    """llama-server's `lora` (checked by the schema): (id, scale) pairs; an id given twice keeps its last scale."""
    if body.get("lora") is None:
        return None
    return tuple({int(entry["id"]): float(entry["scale"]) for entry in body["lora"]}.items())


def sampling_from_wire(body: Mapping[str, Any], *, top_logprobs: int | None,
                       default_max_tokens: int | None = None) -> SamplingParams:
    """The sampling fields both completion APIs share (OpenAI's, and vLLM's extras)."""
    top_k = int_or_default(body, "top_k", 0) or 0
    sampling = SamplingParams(
        temperature=_or_default(body, "temperature", 1.0),
        top_p=_or_default(body, "top_p", 1.0),
        top_k=max(top_k, 0),
        min_p=_or_default(body, "min_p", 0.0),
        presence_penalty=_or_default(body, "presence_penalty", 0.0),
        frequency_penalty=_or_default(body, "frequency_penalty", 0.0),
        repeat_penalty=_or_default(body, "repetition_penalty", 1.0),
        seed=int_or_default(body, "seed", None),
        # LangChain sends only max_completion_tokens; it wins when both are given, as in OpenAI's API.
        max_tokens=int_or_default(body, "max_completion_tokens", int_or_default(body, "max_tokens", default_max_tokens)),
        stop=_stop_from_wire(body.get("stop")),
        logit_bias=tuple((int(token), float(bias)) for token, bias in (body.get("logit_bias") or {}).items()),
        top_logprobs=top_logprobs,
        include_stop_str_in_output=_or_default(body, "include_stop_str_in_output", False),
        stop_token_ids=tuple(int(token) for token in _or_default(body, "stop_token_ids", ())),
        ignore_eos=_or_default(body, "ignore_eos", False),
        min_tokens=int_or_default(body, "min_tokens", 0) or 0,
        max_draft_tokens=int_or_default(body, "speculative.n_max", None),
    )
    if sampling.max_tokens is not None and sampling.min_tokens > sampling.max_tokens:
        raise InvalidRequest(f"min_tokens ({sampling.min_tokens}) is more than max_tokens ({sampling.max_tokens}).",
                             param="min_tokens")
    return sampling


def to_usage_info(usage: Usage) -> UsageInfo:
    details = PromptTokensDetails(cached_tokens=usage.cached_prompt_tokens) if usage.cached_prompt_tokens else None
    drafts = CompletionTokensDetails(
        accepted_prediction_tokens=usage.accepted_draft_tokens,
        rejected_prediction_tokens=usage.drafted_tokens - usage.accepted_draft_tokens,
    ) if usage.drafted_tokens else None
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        total_tokens=usage.total_tokens,
        completion_tokens=usage.completion_tokens,
        prompt_tokens_details=details,
        completion_tokens_details=drafts,
    )


def _to_top_logprob(logprob: TokenLogprob) -> TopLogprob:
    return TopLogprob(token=logprob.token_text, logprob=logprob.logprob,
                      bytes=list(logprob.token_bytes))


def to_choice_logprobs(entries: Sequence[SampledLogprobs]) -> ChoiceLogprobs:
    return ChoiceLogprobs(content=[
        TokenLogprobOut(**_to_top_logprob(entry.chosen).model_dump(), top_logprobs=[_to_top_logprob(t) for t in entry.top])
        for entry in entries
    ])


def to_chat_completion(result: ChatResult, *, completion_id: str, created: int, model: str) -> ChatCompletion:
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        choices=[
            Choice(
                index=choice.index,
                message=AssistantMessage(
                    reasoning_content=choice.reasoning or None,
                    content=choice.text if choice.text or not choice.tool_calls else None,
                    tool_calls=[
                        ToolCallOut(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments_json))
                        for call in choice.tool_calls
                    ],
                ),
                logprobs=None if choice.logprobs is None else to_choice_logprobs(choice.logprobs),
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
    (with `include_usage`) one chunk with no choices carrying the usage. Token log-probabilities ride with the next
    chunk of their choice: the one carrying the text (or call) they produced, or, for text held back (a possible
    stop string), a later one, at the latest the choice's end."""
    pending_logprobs: dict[int, list[SampledLogprobs]] = {}

    def chunk(choices: list[ChunkChoice], usage: UsageInfo | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=completion_id, created=created, model=model, choices=choices, usage=usage)

    def choice(index: int, delta: Delta, **ends: Any) -> ChunkChoice:
        entries = pending_logprobs.pop(index, None)
        logprobs = None if entries is None else to_choice_logprobs(entries)
        return ChunkChoice(index=index, delta=delta, logprobs=logprobs, **ends)

    for index in range(num_choices):
        yield chunk([ChunkChoice(index=index, delta=Delta(role="assistant", content=""))])
    async for event in events:
        match event:
            case LogprobsDelta(choice_index=index, logprobs=entry):
                pending_logprobs.setdefault(index, []).append(entry)
            case TextDelta(choice_index=index, text=text):
                yield chunk([choice(index, Delta(content=text))])
            case ReasoningDelta(choice_index=index, text=text):
                yield chunk([choice(index, Delta(reasoning_content=text))])
            case ToolCallStart(choice_index=index, call_index=call, call_id=call_id, name=name):
                start = ToolCallDelta(index=call, id=call_id, type="function", function=FunctionCallDelta(name=name, arguments=""))
                yield chunk([choice(index, Delta(tool_calls=[start]))])
            case ToolCallArgumentsDelta(choice_index=index, call_index=call, text=text):
                fragment = ToolCallDelta(index=call, function=FunctionCallDelta(arguments=text))
                yield chunk([choice(index, Delta(tool_calls=[fragment]))])
            case ChoiceEnd(choice_index=index, finish_reason=finish_reason, stop_reason=stop_reason):
                yield chunk([choice(index, Delta(), finish_reason=finish_reason, stop_reason=stop_reason)])
            case ChatEnd(usage=usage) if include_usage:
                yield chunk([], to_usage_info(usage))
