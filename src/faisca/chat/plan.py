"""How a request becomes a prompt, and what its output may be: chosen by the card's `tool_format` (data), never
by the model's name.

- no tools, no structured output: the chat template renders the messages; output is free text.
- `response_format`: output constrained to JSON (valid against the schema, if given) from the first token.
- `grammar` (vLLM's `structured_outputs`): the client's grammar constrains the output from the first token; the
  messages are rendered by the chat template, with no tool format (the API refuses `tools` beside it).
- tools on a `react` card (no native calling): the conversation is rewritten into seed 002's ReAct prompt,
  the output constrained to one thought and one JSON action, and parsed into content, reasoning and calls.
- tools on a `mistral` card: its native `[AVAILABLE_TOOLS]` / `[TOOL_CALLS]` format; constrained from the first
  token when a call is required.

Images become the engine's image marker, as text, before any of this: every path renders them where the client put
them (a raw prompt gets them in front, as Ollama does), and the engine finds them there.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from faisca.catalog import ModelCard
from faisca.chat.literal import ControlTextEscaper
from faisca.chat.template import ChatTemplate
from faisca.chat.toolcalls.base import ToolCallParser
from faisca.chat.toolcalls.grammars import mistral_calls_grammar, react_grammar
from faisca.chat.toolcalls.mistral import MistralParser, mistral_prompt
from faisca.chat.toolcalls.react import ReactParser, react_messages
from faisca.chat.structured import json_grammar
from faisca.errors import UnsupportedCapability
from faisca.types import ChatRequest, ImagePart, Message, TextPart


@dataclass(frozen=True)
class OutputPlan:
    prompt: str
    grammar: str | None = None
    new_parser: Callable[[], ToolCallParser] | None = None


def _has_tool_turns(request: ChatRequest) -> bool:
    return any(message.role == "tool" or message.tool_calls for message in request.messages)


def with_image_markers(messages: Sequence[Message], marker: str) -> tuple[Message, ...]:
    """Each image part as a text part holding `marker`."""
    return tuple(
        dataclasses.replace(message, content=tuple(
            TextPart(marker) if isinstance(part, ImagePart) else part for part in message.content
        )) if message.image_parts else message
        for message in messages
    )


def with_image_urls(messages: Sequence[Message], urls: Iterator[str]) -> tuple[Message, ...]:
    """Each image part pointing at the next of `urls` instead (in prompt order)."""
    return tuple(
        dataclasses.replace(message, content=tuple(
            ImagePart(next(urls), part.param) if isinstance(part, ImagePart) else part for part in message.content
        )) if message.image_parts else message
        for message in messages
    )


def plan_chat(card: ModelCard, template: ChatTemplate, request: ChatRequest, *,
              image_marker: str | None = None, escaper: ControlTextEscaper | None = None) -> OutputPlan:
    """The prompt and what the output may be. With `escaper`, the client's text in the prompt never becomes the
    model's control tokens (grammars are built from the request as sent)."""
    if request.raw_prompt is not None:
        num_images = sum(len(message.image_parts) for message in request.messages)
        return _constrained((image_marker or "") * num_images + request.raw_prompt, request)
    if (request.tools or _has_tool_turns(request)) and not card.accepts_tools:
        raise UnsupportedCapability(f"tools: the model `{card.id}` cannot call tools.", param="tools")
    shown = escaper.escape_request(request) if escaper is not None else request  # what the prompt shows
    if image_marker is not None:
        shown = dataclasses.replace(shown, messages=with_image_markers(shown.messages, image_marker))
    uses_tools = request.grammar is None and (request.tools or _has_tool_turns(request))
    match card.tool_format:
        case "react" if uses_tools:
            prompt = template.render(react_messages(shown.messages, shown.tools))
            return OutputPlan(prompt, react_grammar(request.tools, request.tool_choice), ReactParser)
        case "mistral" if uses_tools:
            active = request.tool_choice != "none"
            prompt = mistral_prompt(shown.messages, shown.tools if active else (),
                                    bos_token=template.bos_token, eos_token=template.eos_token)
            required = request.tool_choice not in ("auto", "none")
            grammar = mistral_calls_grammar(request.tools, request.tool_choice, parallel=request.parallel_tool_calls)
            return OutputPlan(prompt, grammar if required else None, MistralParser if active else None)
    return _constrained(template.render(shown.messages), request)


@dataclass(frozen=True)
class UpstreamPlan:
    """A request as faisca forwards it to an upstream server (which renders it with its own chat template): the
    messages to send, whether the request's tools go as they are (native calling upstream), the grammar the output
    must match where faisca does the format (ReAct), and the parser of what comes back."""

    messages: tuple[Message, ...]
    native_tools: bool = False
    grammar: str | None = None
    # the client's own grammar: an upstream that takes none must refuse the request (ReAct's parses either way)
    grammar_required: bool = False
    new_parser: Callable[[], ToolCallParser] | None = None


def plan_upstream(card: ModelCard, request: ChatRequest) -> UpstreamPlan:
    """What faisca adds before an upstream: ReAct for a card without native calling; native calls, response formats
    and plain chats go as they are."""
    if request.raw_prompt is not None:
        if request.messages:
            raise UnsupportedCapability(
                f"The model `{card.id}` is served upstream, which takes images in chat messages only, not with a raw "
                "prompt; send them as messages.", param="images")
        return UpstreamPlan((), grammar=request.grammar, grammar_required=request.grammar is not None)
    if (request.tools or _has_tool_turns(request)) and not card.accepts_tools:
        raise UnsupportedCapability(f"tools: the model `{card.id}` cannot call tools.", param="tools")
    if request.grammar is not None:  # the client's own grammar, as it sent it
        return UpstreamPlan(request.messages, grammar=request.grammar, grammar_required=True)
    match card.tool_format:
        case "react" if request.tools or _has_tool_turns(request):
            return UpstreamPlan(tuple(react_messages(request.messages, request.tools)),
                                grammar=react_grammar(request.tools, request.tool_choice), new_parser=ReactParser)
        case "mistral" if request.tools or _has_tool_turns(request):
            return UpstreamPlan(request.messages, native_tools=True)
    return UpstreamPlan(request.messages)


def _constrained(prompt: str, request: ChatRequest) -> OutputPlan:
    """`prompt`, its output constrained by the request's own grammar or `response_format`, if either is given."""
    if request.grammar is not None:
        return OutputPlan(prompt, request.grammar)
    if request.response_format is not None:
        schema = request.response_format.schema_json
        return OutputPlan(prompt, json_grammar(json.loads(schema) if schema else None))
    return OutputPlan(prompt)
