"""The OpenAI protocol spoken to an upstream: a request's body, and the events in its streamed answer.

Written from the OpenAI API and vLLM's documented extensions (`top_k`, `min_p`, `repetition_penalty`,
`stop_token_ids`, `structured_outputs`, ...); a field is sent only when the request sets it off its default, so a
plain request is one every OpenAI-compatible server takes. Answers are always streamed (`stream_options` asks for
usage at the end; servers that ignore it have their completion tokens counted here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from faisca.errors import InvalidRequest
from faisca.types import (
    ChatEnd, ChatEvent, ChatRequest, ChoiceEnd, FinishReason, ImagePart, LogprobsDelta, Message, ReasoningDelta,
    SampledLogprobs, SamplingParams, TextDelta, TextPart, TokenLogprob, ToolCallArgumentsDelta, ToolCallStart, Usage,
)

# `owned_by` in a server's model list → whether it takes vLLM's `structured_outputs.grammar` in llguidance's Lark
# (vLLM's `guidance` backend; faisca). SGLang takes EBNF (`ebnf`), llama-cpp-python GBNF (`grammar`): neither is sent
# a grammar, and faisca parses what they write.
GRAMMAR_SERVERS = frozenset({"vllm", "faisca"})


class UpstreamProtocolError(Exception):
    """An answer that is not the OpenAI protocol, or an error the upstream reported in its stream."""


@dataclass(frozen=True)
class UpstreamCall:
    """What faisca asks an upstream for, before it is written for one server."""

    messages: tuple[Message, ...]  # images as data URIs; tools already rewritten where faisca does them (ReAct)
    request: ChatRequest  # sampling, choices, response format; its tools are sent only with `native_tools`
    native_tools: bool = False
    grammar: str | None = None  # llguidance Lark the output must match, where the server takes one
    grammar_required: bool = False  # the client's own: a server that takes none refuses the request


def _vllm_fields(sampling: SamplingParams) -> dict[str, Any]:
    """The sampling fields beyond OpenAI's two, under their wire names (vLLM's where OpenAI has none)."""
    return {
        "top_k": sampling.top_k, "min_p": sampling.min_p, "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty, "repetition_penalty": sampling.repeat_penalty,
        "seed": sampling.seed, "max_tokens": sampling.max_tokens, "stop": list(sampling.stop),
        "include_stop_str_in_output": sampling.include_stop_str_in_output,
        "stop_token_ids": list(sampling.stop_token_ids), "ignore_eos": sampling.ignore_eos,
        "min_tokens": sampling.min_tokens,
        "logit_bias": {str(token): bias for token, bias in sampling.logit_bias},
    }


_DEFAULT_FIELDS = _vllm_fields(SamplingParams())


def _sampling_fields(sampling: SamplingParams) -> dict[str, Any]:
    """Temperature and top_p always; the others only where the request sets them off their defaults."""
    fields = {name: value for name, value in _vllm_fields(sampling).items() if value != _DEFAULT_FIELDS[name]}
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, **fields}


def _message_body(message: Message) -> dict[str, Any]:
    body: dict[str, Any] = {"role": message.role}
    if isinstance(message.content, tuple):
        body["content"] = [
            {"type": "text", "text": part.text} if isinstance(part, TextPart)
            else {"type": "image_url", "image_url": {"url": part.url}}
            for part in message.content if isinstance(part, TextPart | ImagePart)
        ]
    else:
        body["content"] = message.content
    if message.tool_calls:
        body["tool_calls"] = [{"id": call.id, "type": "function",
                               "function": {"name": call.name, "arguments": call.arguments_json}}
                              for call in message.tool_calls]
    if message.tool_call_id is not None:
        body["tool_call_id"] = message.tool_call_id
    return body


def request_body(call: UpstreamCall, *, served_name: str, owned_by: str) -> tuple[str, dict[str, Any]]:
    """(path under the base URL, JSON body) for one server: `chat/completions`, or `completions` for a raw
    prompt."""
    request = call.request
    if call.grammar_required and owned_by not in GRAMMAR_SERVERS:
        raise InvalidRequest(f"structured_outputs: the server answering for this model ({owned_by or 'unknown'}) "
                             "takes no llguidance grammars", param="structured_outputs")
    body: dict[str, Any] = {"model": served_name, **_sampling_fields(request.sampling), "stream": True,
                            "stream_options": {"include_usage": True}}
    if request.num_choices != 1:
        body["n"] = request.num_choices
    if request.cache_salt is not None:
        body["cache_salt"] = request.cache_salt
    if call.grammar is not None and owned_by in GRAMMAR_SERVERS:
        body["structured_outputs"] = {"grammar": call.grammar}
    elif request.response_format is not None:
        schema = request.response_format.schema_json
        body["response_format"] = ({"type": "json_object"} if schema is None else
                                   {"type": "json_schema", "json_schema": {"name": "output",
                                                                           "schema": json.loads(schema)}})
    if request.raw_prompt is not None:
        if request.sampling.top_logprobs is not None:
            body["logprobs"] = request.sampling.top_logprobs
        return "completions", {**body, "prompt": request.raw_prompt}
    if request.sampling.top_logprobs is not None:
        body["logprobs"] = True
        if request.sampling.top_logprobs:
            body["top_logprobs"] = request.sampling.top_logprobs
    body["messages"] = [_message_body(message) for message in call.messages]
    if call.native_tools and request.tools:
        body["tools"] = [{"type": "function", "function": {"name": tool.name, "description": tool.description,
                                                           "parameters": json.loads(tool.parameters_json)}}
                         for tool in request.tools]
        choice = request.tool_choice
        body["tool_choice"] = choice if choice in ("auto", "none", "required") else {
            "type": "function", "function": {"name": choice}}
        if not request.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    return "chat/completions", body


def _finish_reason(value: str) -> FinishReason:
    return {"length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}.get(value, "stop")


def _token(entry: dict[str, Any]) -> TokenLogprob:
    raw = entry.get("bytes")
    token_bytes = bytes(raw) if isinstance(raw, list) else str(entry.get("token", "")).encode()
    return TokenLogprob(token_bytes, float(entry.get("logprob", 0.0)))


def _chat_logprobs(choice: dict[str, Any]) -> Iterator[SampledLogprobs]:
    for entry in ((choice.get("logprobs") or {}).get("content") or ()):
        yield SampledLogprobs(_token(entry), tuple(_token(top) for top in entry.get("top_logprobs") or ()))


def _completion_logprobs(choice: dict[str, Any]) -> Iterator[SampledLogprobs]:
    """The legacy shape: parallel lists `tokens`, `token_logprobs`, `top_logprobs` (token → logprob dicts)."""
    logprobs = choice.get("logprobs") or {}
    tops = logprobs.get("top_logprobs") or ()
    for position, (token, logprob) in enumerate(zip(logprobs.get("tokens") or (), logprobs.get("token_logprobs") or ())):
        top = tops[position] if position < len(tops) and isinstance(tops[position], dict) else {}
        yield SampledLogprobs(TokenLogprob(str(token).encode(), float(logprob or 0.0)),
                              tuple(TokenLogprob(str(text).encode(), float(value)) for text, value in top.items()))


class ChunkDecoder:
    """An upstream's streamed chunks → faisca's chat events (tool call ids as the upstream gave them).

    Tracks what the end needs: which choices ended, and the usage (counted here when the server sends none)."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.ended: set[int] = set()
        self.num_chunks_with_tokens = 0
        self._calls: dict[tuple[int, int], bool] = {}  # (choice, call) -> started
        self._finished = False

    def events(self, chunk: object) -> list[ChatEvent]:
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError("a streamed chunk is not a JSON object")
        if "error" in chunk or chunk.get("object") == "error":
            error = chunk.get("error", chunk)
            message = error.get("message") if isinstance(error, dict) else error
            raise UpstreamProtocolError(f"the upstream reported an error: {message}")
        events: list[ChatEvent] = []
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                events += self._choice_events(choice)
        if isinstance(usage := chunk.get("usage"), dict):
            cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
            accepted = _detail(usage, "completion_tokens_details", "accepted_prediction_tokens")
            rejected = _detail(usage, "completion_tokens_details", "rejected_prediction_tokens")
            self.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), cached,
                               drafted_tokens=accepted + rejected, accepted_draft_tokens=accepted)
        return events

    def _choice_events(self, choice: dict[str, Any]) -> list[ChatEvent]:
        index = int(choice.get("index") or 0)
        events: list[ChatEvent] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):  # chat
            logprobs = list(_chat_logprobs(choice))
            events += [LogprobsDelta(index, entry) for entry in logprobs]
            # vLLM's field; newer vLLM also names it `reasoning`
            if reasoning := delta.get("reasoning_content") or delta.get("reasoning"):
                events.append(ReasoningDelta(index, str(reasoning)))
            if content := delta.get("content"):
                events.append(TextDelta(index, str(content)))
            for call in delta.get("tool_calls") or ():
                events += self._call_events(index, call)
        else:  # a completion
            logprobs = list(_completion_logprobs(choice))
            events += [LogprobsDelta(index, entry) for entry in logprobs]
            if text := choice.get("text"):
                events.append(TextDelta(index, str(text)))
        if logprobs or len(events):
            self.num_chunks_with_tokens += max(1, len(logprobs))
        if finish := choice.get("finish_reason"):
            stop_reason = choice.get("stop_reason")
            self.ended.add(index)
            events.append(ChoiceEnd(index, _finish_reason(str(finish)),
                                    stop_reason if isinstance(stop_reason, str | int) else None))
        return events

    def _call_events(self, choice_index: int, call: object) -> list[ChatEvent]:
        if not isinstance(call, dict):
            raise UpstreamProtocolError("a tool call delta is not a JSON object")
        call_index = int(call.get("index") or 0)
        function = call.get("function") or {}
        events: list[ChatEvent] = []
        if (choice_index, call_index) not in self._calls:
            self._calls[choice_index, call_index] = True
            events.append(ToolCallStart(choice_index, call_index, str(call.get("id") or ""), str(function.get("name") or "")))
        if arguments := function.get("arguments"):
            events.append(ToolCallArgumentsDelta(choice_index, call_index, str(arguments)))
        return events

    def end(self, num_choices: int) -> list[ChatEvent]:
        """After `[DONE]`: the choices a server left without a finish reason end by length (a server that ignores
        `n` answers one); then the usage. A stream in which no choice ended was cut (llama-cpp-python's server cuts
        one when another request comes): an error."""
        if self._finished:
            return []
        if not self.ended:
            raise UpstreamProtocolError("the upstream ended its stream before the answer ended")
        self._finished = True
        events: list[ChatEvent] = [ChoiceEnd(index, "length") for index in range(num_choices) if index not in self.ended]
        events.append(ChatEnd(self.usage or Usage(0, self.num_chunks_with_tokens)))
        return events


def _detail(usage: dict[str, Any], group: str, name: str) -> int:
    """A count in one of a usage's details objects (`prompt_tokens_details.cached_tokens`); 0 when absent."""
    details = usage.get(group)
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
