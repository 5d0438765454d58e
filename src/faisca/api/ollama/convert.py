"""Pure converters between Ollama wire bodies and faisca's neutral types, named by direction."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from faisca.api.ollama.protocol import DEFAULT_OPTIONS, KNOWN_OPTIONS
from faisca.catalog import ModelCard
from faisca.catalog.derive import quantization_name
from faisca.catalog.ollama_schema import validators
from faisca.chat.tooldefs import checked_schema, tools_from_definitions
from faisca.errors import UnsupportedCapability
from faisca.lifecycle.keep_alive import parse_keep_alive
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
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallStart,
)

logger = logging.getLogger("faisca.api.ollama")


def model_name(card: ModelCard) -> str:
    """The name Ollama clients see: the card's first Ollama-style alias, else its id."""
    return next((alias for alias in card.aliases if ":" in alias), card.id)


def _option(options: Mapping[str, Any], key: str) -> Any:
    """An option's value; Ollama's default when left out (or null)."""
    value = options.get(key)
    return DEFAULT_OPTIONS.get(key) if value is None else value


def sampling_from_options(options: Mapping[str, Any] | None) -> SamplingParams:
    """`options` that passed the schema, as sampling parameters (Ollama's defaults for those left out)."""
    options = options or {}
    if unknown := sorted(set(options) - KNOWN_OPTIONS):
        logger.info("ignoring Ollama options faisca does not use: %s", ", ".join(unknown))
    num_predict = options.get("num_predict")
    stop = options.get("stop") or ()
    return SamplingParams(
        temperature=float(_option(options, "temperature")),
        top_p=float(_option(options, "top_p")),
        top_k=max(int(_option(options, "top_k")), 0),  # -1 and 0: off
        min_p=float(_option(options, "min_p")),
        repeat_penalty=float(_option(options, "repeat_penalty")),
        presence_penalty=float(options.get("presence_penalty") or 0.0),
        frequency_penalty=float(options.get("frequency_penalty") or 0.0),
        seed=None if options.get("seed") is None else int(options["seed"]),
        # 0, -1 (until the context ends) and -2 (fill the context) all mean: as much as the context allows
        max_tokens=int(num_predict) if num_predict is not None and num_predict > 0 else None,
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
    )


def _with_logprobs(sampling: SamplingParams, body: Mapping[str, Any]) -> SamplingParams:
    """Ollama's top-level `logprobs` (bool) and `top_logprobs` (0-20, read only with `logprobs`)."""
    return dataclasses.replace(sampling, top_logprobs=int(body.get("top_logprobs") or 0)) if body.get("logprobs") \
        else sampling


def _num_ctx(options: Mapping[str, Any] | None) -> int | None:
    """`options.num_ctx`: a context for this request smaller than the model's; None (or 0) for the model's."""
    num_ctx = (options or {}).get("num_ctx")
    return int(num_ctx) if num_ctx else None


def _format(body: Mapping[str, Any]) -> ResponseFormat | None:
    wire = body.get("format")
    if wire in (None, ""):
        return None
    if wire == "json":
        return ResponseFormat()
    return ResponseFormat(checked_schema(wire, param="format", what="the format"))


def _images(images: list[str] | None, param: str) -> tuple[ContentPart, ...]:
    # Raw base64, as Ollama takes it; what it holds is decided by decoding it.
    return tuple(ImagePart(f"data:application/octet-stream;base64,{image}", param=f"{param}.{number}")
                 for number, image in enumerate(images or ()))


def _content(text: str, images: tuple[ContentPart, ...]) -> str | tuple[ContentPart, ...]:
    return (TextPart(text), *images) if images else text


def _refuse_unimplemented(body: Mapping[str, Any]) -> None:
    """Generate fields a client would silently lose are refused instead."""
    for key, what in (("suffix", "inserting text (fill-in-the-middle) is not supported"),
                      ("template", "the model's own chat template is always used")):
        if body.get(key):
            raise UnsupportedCapability(f"{key}: {what}.", param=key)


def from_generate(body: Mapping[str, Any], card: ModelCard) -> ChatRequest:
    """An `/api/generate` body (validated here against the card's schema), as a neutral `ChatRequest`."""
    validators(card).generate.validate(body)
    _refuse_unimplemented(body)
    prompt = body.get("prompt") or ""
    sampling = _with_logprobs(sampling_from_options(body.get("options")), body)
    images = _images(body.get("images"), "images")
    messages = []
    if body.get("raw"):
        messages = [Message("user", images)] if images else []
    else:
        if system := body.get("system"):
            messages.append(Message("system", system))
        messages.append(Message("user", _content(prompt, images)))
    # Ollama fits what it can in the context, and never refuses an answer for its length.
    return ChatRequest(card.id, tuple(messages), sampling, response_format=_format(body),
                       raw_prompt=prompt if body.get("raw") else None,
                       max_context_tokens=_num_ctx(body.get("options")), fit_context=True,
                       context=tuple(int(token) for token in body.get("context") or ()),
                       keep_alive_s=parse_keep_alive(body.get("keep_alive")))


def _chat_message(index: int, wire: Mapping[str, Any]) -> Message:
    calls = tuple(
        ToolCall(str(call.get("id") or f"call{index}x{number}"), call["function"]["name"],
                 json.dumps(call["function"].get("arguments") or {}, ensure_ascii=False))
        for number, call in enumerate(wire.get("tool_calls") or ())
    )
    images = _images(wire.get("images"), f"messages.{index}.images")
    tool_call_id = wire.get("tool_call_id") or wire.get("tool_name") if wire["role"] == "tool" else None
    return Message(wire["role"], _content(wire.get("content") or "", images), calls, tool_call_id)


def from_chat(body: Mapping[str, Any], card: ModelCard) -> ChatRequest:
    """An `/api/chat` body (validated here against the card's schema), as a neutral `ChatRequest`."""
    validators(card).chat.validate(body)
    tools = tools_from_definitions(body.get("tools") or [])
    return ChatRequest(
        card.id,
        tuple(_chat_message(index, message) for index, message in enumerate(body["messages"])),
        _with_logprobs(sampling_from_options(body.get("options")), body),
        tools=tools,
        tool_choice="auto" if tools else "none",
        response_format=_format(body),
        max_context_tokens=_num_ctx(body.get("options")),
        fit_context=True,
        keep_alive_s=parse_keep_alive(body.get("keep_alive")),
    )


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Timings:
    """Nanosecond durations for the final line, measured as the events arrive."""

    started_ns: int = field(default_factory=time.monotonic_ns)
    first_token_ns: int | None = None

    def mark(self) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.monotonic_ns()

    def final_fields(self, *, done_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        ended_ns = time.monotonic_ns()
        first_ns = self.first_token_ns or ended_ns
        return {
            "done": True,
            "done_reason": done_reason,
            "total_duration": ended_ns - self.started_ns,
            "load_duration": 0,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": first_ns - self.started_ns,
            "eval_count": completion_tokens,
            "eval_duration": ended_ns - first_ns,
        }


async def to_lines(events: AsyncIterator[ChatEvent], *, model: str, chat: bool) -> AsyncIterator[dict[str, Any]]:
    """Ollama's stream: one object per piece of text (`response`, or `message` for chat), tool calls in one
    message once their arguments are complete, then the final object with `done: true` and the timings. Token
    log-probabilities (when asked for) ride with the next object: the one carrying their text, or a later one."""
    timings = Timings()
    calls: dict[int, list[Any]] = {}  # call index -> [name, argument pieces]
    done_reason = "stop"
    pending_logprobs: list[SampledLogprobs] = []

    def line(text: str = "", *, thinking: str = "", tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        logprobs = {"logprobs": [to_logprob(entry) for entry in pending_logprobs]} if pending_logprobs else {}
        pending_logprobs.clear()
        if not chat:
            return {"model": model, "created_at": now_iso(), "response": text, **({"thinking": thinking} if thinking else {}),
                    "done": False, **logprobs}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {"model": model, "created_at": now_iso(), "message": message, "done": False, **logprobs}

    async for event in events:
        match event:
            case LogprobsDelta(logprobs=entry):
                pending_logprobs.append(entry)
            case TextDelta(text=text):
                timings.mark()
                yield line(text)
            case ReasoningDelta(text=text):
                timings.mark()
                yield line(thinking=text)
            case ToolCallStart(call_index=call, name=name):
                timings.mark()
                calls[call] = [name, []]
            case ToolCallArgumentsDelta(call_index=call, text=text):
                calls[call][1].append(text)
            case ChoiceEnd(finish_reason=finish_reason):
                done_reason = "length" if finish_reason == "length" else "stop"
                if calls:
                    yield line(tool_calls=[{"function": {"name": name, "arguments": json.loads("".join(pieces) or "{}")}}
                                           for name, pieces in calls.values()])
            case ChatEnd(usage=usage, tokens=tokens):
                final = line() if chat else line("")
                # generate's final line carries the conversation's tokens, for the next call's `context`
                context = {"context": list(tokens)} if not chat and tokens is not None else {}
                yield {**final, **timings.final_fields(done_reason=done_reason, prompt_tokens=usage.prompt_tokens,
                                                       completion_tokens=usage.completion_tokens), **context}


def _token_logprob(logprob: TokenLogprob) -> dict[str, Any]:
    return {"token": logprob.token_text, "logprob": logprob.logprob,
            "bytes": list(logprob.token_bytes)}


def to_logprob(entry: SampledLogprobs) -> dict[str, Any]:
    """Ollama's `Logprob`: the token's, with `top_logprobs` only when alternatives were asked for."""
    top = {"top_logprobs": [_token_logprob(other) for other in entry.top]} if entry.top else {}
    return {**_token_logprob(entry.chosen), **top}


def fold_lines(lines: list[dict[str, Any]], *, chat: bool) -> dict[str, Any]:
    """The non-streaming answer: the stream's objects folded into its final one."""
    final = dict(lines[-1])
    if logprobs := [entry for l in lines for entry in l.get("logprobs", ())]:
        final["logprobs"] = logprobs
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(l["message"]["content"] for l in lines)}
        if thinking := "".join(l["message"].get("thinking", "") for l in lines):
            message["thinking"] = thinking
        if tool_calls := [call for l in lines for call in l["message"].get("tool_calls", [])]:
            message["tool_calls"] = tool_calls
        final["message"] = message
    else:
        final["response"] = "".join(l["response"] for l in lines)
        if thinking := "".join(l.get("thinking", "") for l in lines):
            final["thinking"] = thinking
    return final


def model_details(card: ModelCard, metadata: Mapping[str, str]) -> dict[str, Any]:
    family = metadata.get("general.architecture", card.name.lower().replace(" ", ""))
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": card.size.split()[0],
        "quantization_level": quantization_name(metadata),
    }


def capabilities(card: ModelCard) -> list[str]:
    return ["completion", *(["tools"] if card.accepts_tools else []), *(["vision"] if card.accepts_images else [])]
