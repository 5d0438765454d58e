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
from faisca.chat.tooldefs import checked_schema, tools_from_definitions
from faisca.errors import InvalidRequest
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


def _require(body: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    value = body.get(key)
    if not isinstance(value, kind):
        raise InvalidRequest(f"{key}: {what}", param=key)
    return value


def _number(options: Mapping[str, Any], key: str) -> float:
    value = options.get(key, DEFAULT_OPTIONS.get(key, 0.0))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"options.{key} must be a number", param=f"options.{key}")
    return float(value)


def sampling_from_options(options: Any) -> SamplingParams:
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InvalidRequest("options must be an object", param="options")
    if unknown := sorted(set(options) - KNOWN_OPTIONS):
        logger.info("ignoring Ollama options faisca does not use: %s", ", ".join(unknown))
    num_predict = options.get("num_predict")
    stop = options.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not all(isinstance(item, str) for item in stop):
        raise InvalidRequest("options.stop must be a list of strings", param="options.stop")
    seed = options.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequest("options.seed must be an integer", param="options.seed")
    temperature = _number(options, "temperature")
    if temperature < 0:
        raise InvalidRequest("options.temperature must be >= 0", param="options.temperature")
    return SamplingParams(
        temperature=temperature,
        top_p=min(max(_number(options, "top_p"), 0.0), 1.0),
        top_k=max(int(_number(options, "top_k")), 0),
        min_p=min(max(_number(options, "min_p"), 0.0), 1.0),
        repeat_penalty=max(_number(options, "repeat_penalty"), 1e-3),
        presence_penalty=_number(options, "presence_penalty"),
        frequency_penalty=_number(options, "frequency_penalty"),
        seed=seed,
        # -1 (forever) and -2 (fill the context) both mean: as much as the context allows
        max_tokens=int(num_predict) if isinstance(num_predict, int) and num_predict > 0 else None,
        stop=tuple(stop),
    )


def _with_logprobs(sampling: SamplingParams, body: Mapping[str, Any]) -> SamplingParams:
    """Ollama's top-level `logprobs` (bool) and `top_logprobs` (0-20, read only with `logprobs`)."""
    num_top = body.get("top_logprobs") or 0
    if isinstance(num_top, bool) or not isinstance(num_top, int) or not 0 <= num_top <= 20:
        raise InvalidRequest("top_logprobs must be between 0 and 20", param="top_logprobs")
    if not isinstance(body.get("logprobs") or False, bool):
        raise InvalidRequest("logprobs must be true or false", param="logprobs")
    return dataclasses.replace(sampling, top_logprobs=num_top) if body.get("logprobs") else sampling


def _num_ctx(options: Any) -> int | None:
    """`options.num_ctx`: a context for this request smaller than the model's; None (or 0) for the model's."""
    num_ctx = options.get("num_ctx") if isinstance(options, Mapping) else None
    if num_ctx is not None and (isinstance(num_ctx, bool) or not isinstance(num_ctx, int) or num_ctx < 0):
        raise InvalidRequest("options.num_ctx must be a whole number of tokens", param="options.num_ctx")
    return num_ctx or None


def _format(body: Mapping[str, Any]) -> ResponseFormat | None:
    wire = body.get("format")
    if wire in (None, ""):
        return None
    if wire == "json":
        return ResponseFormat()
    if isinstance(wire, Mapping):
        return ResponseFormat(checked_schema(wire, param="format", what="the format"))
    raise InvalidRequest('format must be "json" or a JSON schema', param="format")


def _images(images: Any, param: str) -> tuple[ContentPart, ...]:
    if images is None:
        return ()
    if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
        raise InvalidRequest(f"{param} must be a list of base64 strings", param=param)
    # Raw base64, as Ollama takes it; what it holds is decided by decoding it.
    return tuple(ImagePart(f"data:application/octet-stream;base64,{image}", param=f"{param}.{number}")
                 for number, image in enumerate(images))


def _content(text: str, images: tuple[ContentPart, ...]) -> str | tuple[ContentPart, ...]:
    return (TextPart(text), *images) if images else text


def from_generate(body: Mapping[str, Any], card: ModelCard) -> ChatRequest:
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string", param="prompt")
    sampling = _with_logprobs(sampling_from_options(body.get("options")), body)
    images = _images(body.get("images"), "images")
    messages = []
    if body.get("raw"):
        messages = [Message("user", images)] if images else []
    else:
        if system := body.get("system"):
            messages.append(Message("system", str(system)))
        messages.append(Message("user", _content(prompt, images)))
    # Ollama fits what it can in the context, and never refuses an answer for its length.
    return ChatRequest(card.id, tuple(messages), sampling, response_format=_format(body),
                       raw_prompt=prompt if body.get("raw") else None,
                       max_context_tokens=_num_ctx(body.get("options")), fit_context=True)


def _chat_message(index: int, wire: Any) -> Message:
    if not isinstance(wire, Mapping) or wire.get("role") not in ("system", "user", "assistant", "tool"):
        raise InvalidRequest(f"messages.{index}.role must be one of system, user, assistant, tool",
                             param=f"messages.{index}.role")
    content = wire.get("content") or ""
    if not isinstance(content, str):
        raise InvalidRequest(f"messages.{index}.content must be a string", param=f"messages.{index}.content")
    calls = tuple(
        ToolCall(str(call.get("id") or f"call{index}x{number}"), call["function"]["name"],
                 json.dumps(call["function"].get("arguments") or {}, ensure_ascii=False))
        for number, call in enumerate(wire.get("tool_calls") or ())
    )
    images = _images(wire.get("images"), f"messages.{index}.images")
    tool_call_id = wire.get("tool_call_id") or wire.get("tool_name") if wire["role"] == "tool" else None
    return Message(wire["role"], _content(content, images), calls, tool_call_id)


def from_chat(body: Mapping[str, Any], card: ModelCard) -> ChatRequest:
    messages = _require(body, "messages", list, "messages must be a list")
    tools = tools_from_definitions(body.get("tools") or [])
    return ChatRequest(
        card.id,
        tuple(_chat_message(index, message) for index, message in enumerate(messages)),
        _with_logprobs(sampling_from_options(body.get("options")), body),
        tools=tools,
        tool_choice="auto" if tools else "none",
        response_format=_format(body),
        max_context_tokens=_num_ctx(body.get("options")),
        fit_context=True,
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
            case ChatEnd(usage=usage):
                final = line() if chat else line("")
                yield {**final, **timings.final_fields(done_reason=done_reason, prompt_tokens=usage.prompt_tokens,
                                                       completion_tokens=usage.completion_tokens)}


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
