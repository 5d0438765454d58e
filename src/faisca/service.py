"""The one orchestrator both API surfaces call: resolve card → check → render → tokenize → generate → stop.

`start_chat` does every check that can fail before the first byte (so surfaces answer those with a
status code) and returns the event stream; the non-streaming answer is `fold_chat` of that stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from faisca.catalog import ModelCard
from faisca.chat.fit import conversation_cuts, longest_fitting
from faisca.chat.plan import OutputPlan, UpstreamPlan, plan_chat, plan_upstream, with_image_urls
from faisca.chat.stops import StopMatcher
from faisca.chat.toolcalls.base import (
    ParsedCallArguments, ParsedCallStart, ParsedEvent, ParsedReasoning, ParsedText, ToolCallParser, new_call_id,
)
from faisca.embedding import input_tokens, output_dimensions, shortened
from faisca.engine.base import Constraint, EnginePrompt, LoraInfo, LoraSet, PromptAccepted
from faisca.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound, UnsupportedCapability
from faisca.fleet import UpstreamCall, UpstreamStream
from faisca.fleet.routing import conversation_affinity
from faisca.images import DecodedImage, ImageLoader, png_data_uri
from faisca.metrics import Metrics
from faisca.registry import ModelRegistry, RemoteModel, ServedModel
from faisca.scheduler.admission import Admission, AdmissionLimits, AdmittedStream, Ticket
from faisca.types import (
    ChatEnd, ChatEvent, ChatRequest, ChoiceEnd, EmbeddingRequest, FinishReason, ImagePart, LogprobsDelta, ReasoningDelta, SampledLogprobs,
    SamplingParams, TextDelta, ToolCall, ToolCallArgumentsDelta, ToolCallStart, Usage,
)

logger = logging.getLogger("faisca.service")

T = TypeVar("T")


def image_sources(request: ChatRequest) -> list[tuple[str, str]]:
    """The request's images in prompt order, as (URL or data URI, the request field it came from)."""
    return [
        (part.url, part.param or f"messages.{message_index}.content.{part_index}.image_url")
        for message_index, message in enumerate(request.messages) if isinstance(message.content, tuple)
        for part_index, part in enumerate(message.content) if isinstance(part, ImagePart)
    ]


def image_message_indices(request: ChatRequest) -> list[int]:
    """The message each of the request's images (in prompt order) is in."""
    return [index for index, message in enumerate(request.messages) for _ in message.image_parts]


def check_capabilities(card: ModelCard, sources: list[tuple[str, str]]) -> None:
    if sources and not card.accepts_images:
        raise UnsupportedCapability(f"The model `{card.id}` takes text only; it cannot read images.", param=sources[0][1])


def check_token_ids(sampling: SamplingParams, vocab_size: int) -> None:
    """Token ids a request names (logit_bias, stop_token_ids) must be in the model's vocabulary."""
    for param, tokens in (("logit_bias", [token for token, _ in sampling.logit_bias]),
                          ("stop_token_ids", sampling.stop_token_ids)):
        for token in tokens:
            if token >= vocab_size:
                raise InvalidRequest(f"{param}: token {token} is not in this model's vocabulary of {vocab_size}.",
                                     param=param)


def lora_set(card: ModelCard, adapters: Sequence[LoraInfo], request: ChatRequest) -> LoraSet:
    """The adapters a request runs under, and their scales: llama-server's `lora` mix when given (the adapters it
    does not list are off), else the adapter its `model` named at scale 1, else none."""
    known = {info.id: info for info in adapters}
    if request.lora is not None:
        for adapter_id, _ in request.lora:
            if adapter_id not in known:
                raise InvalidRequest(f"lora: no adapter with id {adapter_id} is loaded for `{card.id}` (see GET "
                                     "/lora-adapters)", param="lora")
        mix = [(adapter_id, scale) for adapter_id, scale in request.lora if scale != 0]
    elif request.adapter is not None:
        by_name = {info.name: info.id for info in adapters}
        if request.adapter not in by_name:
            raise ModelNotFound(f"The model `{request.adapter}` does not exist (its LoRA adapter was unloaded).",
                                param="model")
        mix = [(by_name[request.adapter], 1.0)]
    else:
        mix = []
    if mix and not card.lora:
        raise UnsupportedCapability(f"The model `{card.id}` takes no LoRA adapters (its card says LoRA ❌).",
                                    param="lora" if request.lora is not None else "model")
    return tuple(sorted(mix))


def continued(context: tuple[int, ...], prompt: EnginePrompt, added_bos: int | None) -> EnginePrompt:
    """Ollama's `context` (an earlier exchange's tokens) followed by the new prompt, whose BOS, when the engine added
    one, the context already begins with."""
    tokens = prompt.tokens
    if added_bos is not None and tokens[:1] == (added_bos,):
        tokens = tokens[1:]
    shift = len(context) + len(tokens) - prompt.num_tokens
    return EnginePrompt(context + tokens, tuple(dataclasses.replace(image, start=image.start + shift)
                                                for image in prompt.images))


def max_new_tokens_for(num_prompt_tokens: int, requested_max_tokens: int | None, max_context_tokens: int) -> int:
    """What fits in the context: the requested bound, or all the room left when none was asked for."""
    room = max_context_tokens - num_prompt_tokens
    if requested_max_tokens is None:
        if room < 1:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {max_context_tokens} tokens; your messages use "
                f"{num_prompt_tokens} tokens, which leaves no room for a completion.",
                param="messages",
            )
        return room
    if requested_max_tokens > room:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_context_tokens} tokens. However, you requested "
            f"{num_prompt_tokens + requested_max_tokens} tokens ({num_prompt_tokens} in the messages, "
            f"{requested_max_tokens} in the completion). Please reduce the length of the messages or completion.",
            param="max_tokens",
        )
    return requested_max_tokens


class ChatService:
    def __init__(self, registry: ModelRegistry, *, limits: AdmissionLimits | None = None,
                 metrics: Metrics | None = None, images: ImageLoader | None = None) -> None:
        self.registry = registry
        self.catalog = registry.catalog
        self.metrics = metrics or Metrics()
        self._images = images or ImageLoader()
        self._limits = limits or AdmissionLimits()
        self._admissions: dict[str, Admission] = {}
        # rendering, tokenizing and compiling grammars: off the event loop, two requests at a time (the cores are few,
        # and a thread holding the GIL longer than that would slow the loop's turns)
        self._preparing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare")

    def resolve_model(self, name: str) -> tuple[ModelCard, str | None]:
        """A request's `model`: a card (by id, Hugging Face id or alias), or a LoRA adapter of a served model (its
        card, and the adapter's name)."""
        try:
            return self.catalog.resolve(name), None
        except ModelNotFound:
            if card := self.registry.adapter_owner(name):  # its model loads (with its adapters) if it is not in memory
                return card, name
            raise

    def _admission(self, card: ModelCard) -> Admission:
        return self._admissions.setdefault(card.id, Admission(card.id, self._limits))

    async def aclose(self) -> None:
        await self._images.aclose()
        self._preparing.shutdown(wait=False, cancel_futures=True)

    @contextlib.asynccontextmanager
    async def local_model(self, name: str | None) -> AsyncIterator[ServedModel]:
        """A model whose weights run here, held (loaded first if it is not in memory) for the block: the one `name`
        resolves to, else the only one in memory (llama-server's routes name no model); InvalidRequest for a model
        served upstream or a LoRA adapter."""
        if name is None:
            local = [served for served in self.registry.ready_models() if isinstance(served, ServedModel)]
            if len(local) != 1:
                raise InvalidRequest("model: name the model (several are served here)" if local else
                                     "model: no model runs here yet; name one", param="model")
            card = local[0].card
        else:
            card, adapter = self.resolve_model(name)
            if adapter is not None:
                raise UnsupportedCapability(f"`{adapter}` is a LoRA adapter: embeddings and tokens come from its base "
                                            f"model, `{card.id}`.", param="model")
        ticket = self._admission(card).enter()
        try:
            lease = await self.registry.acquire(card)
            ticket.tie(lease.release)
            if isinstance(lease.served, RemoteModel):
                raise UnsupportedCapability(f"The model `{card.id}` is served upstream: embeddings and tokenizing are "
                                            "not available for upstream models.", param="model")
            yield lease.served
        finally:
            ticket.release()

    async def in_worker(self, work: Callable[[], T]) -> T:
        """`work` on a preparing thread: tokenizing and detokenizing grow with the request."""
        return await asyncio.get_running_loop().run_in_executor(self._preparing, work)

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        if len(request.inputs) == 0:
            raise InvalidRequest(f"{request.param}: no inputs; give a text or a list of them.", param=request.param)
        async with self.local_model(request.model_id) as served:
            engine = served.engine
            dimensions = output_dimensions(served.card, engine.embedding_dimensions, request.dimensions)
            tokenize = functools.partial(engine.tokenize, add_special=True, parse_special=False)
            inputs = await self.in_worker(lambda: input_tokens(
                request, tokenize, vocab_size=engine.vocab_size, max_tokens=engine.max_embedding_tokens))
            vectors = await engine.embed(inputs)
        num_tokens = sum(len(tokens) for tokens in inputs)
        self.metrics.prompt_tokens.labels(served.card.id).inc(num_tokens)
        return Embeddings(shortened(vectors, dimensions), num_tokens)

    async def start_chat(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        card = self.catalog.resolve(request.model_id)
        if card.embedding:
            raise UnsupportedCapability(f"The model `{card.id}` is an embedding model: it answers /v1/embeddings and "
                                        "/api/embed, not chat or completions.", param="model")
        sources = image_sources(request)
        check_capabilities(card, sources)
        self._images.check_count(sources)
        # admitted before its model loads (the queue bound holds while it waits), and holding the model until its
        # stream ends: the model is not unloaded under it, and its idle time starts then
        ticket = self._admission(card).enter()
        try:
            lease = await self.registry.acquire(card, request.keep_alive_s)
        except BaseException:
            ticket.release()
            raise
        ticket.tie(lease.release)
        try:
            if isinstance(lease.served, RemoteModel):
                return await self._start_remote(lease.served, request, sources, ticket)
            return await self._start_local(lease.served, request, sources, ticket)
        except BaseException:  # refused or cancelled before its stream exists
            ticket.release()
            raise

    async def _start_local(self, served: ServedModel, request: ChatRequest, sources: list[tuple[str, str]],
                           ticket: Ticket) -> AsyncIterator[ChatEvent]:
        card = served.card
        loras = lora_set(card, served.engine.lora_adapters, request)
        image_marker = served.engine.image_marker
        if sources and image_marker is None:
            raise UnsupportedCapability(
                f"The model `{card.id}` is served without its image projector, so it cannot read images here; "
                f"serve it with `--mmproj FILE`.", param=sources[0][1],
            )
        check_token_ids(request.sampling, served.engine.vocab_size)
        if (bad := next((token for token in request.context if token >= served.engine.vocab_size), None)) is not None:
            raise InvalidRequest(f"context: token {bad} is not in this model's vocabulary of "
                                 f"{served.engine.vocab_size}.", param="context")
        max_context_tokens = min(request.max_context_tokens or served.engine.max_context_tokens,
                                 served.engine.max_context_tokens)
        images = await self._images.load_all(sources) if sources else ()  # only an admitted request loads images
        plan, prompt, constraints = await asyncio.get_running_loop().run_in_executor(
            self._preparing, self._prepare, card, served, request, images, max_context_tokens)
        prompt = dataclasses.replace(prompt, loras=loras)
        if prompt.num_tokens == 0:  # a raw prompt of "" for a model without a BOS token: nothing to continue
            raise InvalidRequest("prompt: the prompt is empty; the model needs at least one token to continue "
                                 "from.", param="prompt")
        if request.fit_context:  # the answer stops where the context ends
            room = max_new_tokens_for(prompt.num_tokens, None, max_context_tokens)
            max_new_tokens = min(room, request.sampling.max_tokens or room)
        else:
            max_new_tokens = max_new_tokens_for(prompt.num_tokens, request.sampling.max_tokens, max_context_tokens)
        return AdmittedStream(self._generate(served, request, plan, prompt, max_new_tokens, constraints), ticket)

    async def _start_remote(self, served: RemoteModel, request: ChatRequest, sources: list[tuple[str, str]],
                            ticket: Ticket) -> AsyncIterator[ChatEvent]:
        """A request to a model served upstream: checked, its images fetched and decoded here (the upstream gets them
        as PNG data URIs), ReAct done here where the card needs it, and sent once a replica has begun answering."""
        if request.adapter is not None or request.lora:
            raise UnsupportedCapability(f"The model `{served.card.id}` is served upstream: name the upstream's "
                                        "adapter as its own model instead of a LoRA adapter here.", param="lora")
        plan = plan_upstream(served.card, request)
        messages = plan.messages
        if sources:
            images = await self._images.load_all(sources)
            uris = await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(
                self._preparing, png_data_uri, image) for image in images))
            messages = with_image_urls(messages, iter(uris))
        call = UpstreamCall(messages, request, native_tools=plan.native_tools, grammar=plan.grammar,
                            grammar_required=plan.grammar_required)
        stream = await served.fleet.open(call, affinity=conversation_affinity(request))
        self.metrics.upstream_time_to_first_token_s.labels(served.card.id, stream.replica.key).observe(
            stream.first_event_s)
        return AdmittedStream(self._remote_events(served, request, plan, stream), ticket)

    async def _remote_events(self, served: RemoteModel, request: ChatRequest, plan: UpstreamPlan,
                             stream: UpstreamStream) -> AsyncIterator[ChatEvent]:
        """An upstream's events as faisca's: text through the plan's parser (ReAct), tool calls with faisca's ids."""
        started_at_s = time.perf_counter() - stream.first_event_s
        calls = [_CallEvents(index, plan.new_parser() if plan.new_parser else None)
                 for index in range(request.num_choices)]
        first = True
        events = stream.events()
        try:
            async for event in events:
                for chat_event in self._remote_event(event, served, calls, first, started_at_s):
                    yield chat_event
                first = False
        finally:  # closed early (a client gone): the upstream request ends now, not when it is collected
            await events.aclose()  # type: ignore[attr-defined]

    def _remote_event(self, event: ChatEvent, served: RemoteModel, calls: list[_CallEvents], first: bool,
                      started_at_s: float) -> list[ChatEvent]:
        model = served.card.id
        if first:
            self.metrics.time_to_first_token_s.labels(model).observe(time.perf_counter() - started_at_s)
        match event:
            case TextDelta(choice_index=index, text=text) if index < len(calls):
                return calls[index].feed(text)
            case ToolCallStart(choice_index=index, call_index=call, name=name) if index < len(calls):
                calls[index].count_call(call)
                return [ToolCallStart(index, call, new_call_id(), name)]
            case ChoiceEnd(choice_index=index, finish_reason=finish_reason, stop_reason=stop_reason) \
                    if index < len(calls):
                ended = calls[index].finish("")
                if calls[index].num_calls and finish_reason == "stop":
                    finish_reason = "tool_calls"
                return [*ended, ChoiceEnd(index, finish_reason, stop_reason)]
            case ChatEnd(usage=usage):
                self.metrics.prompt_tokens.labels(model).inc(usage.prompt_tokens)
                self.metrics.generation_tokens.labels(model).inc(usage.completion_tokens)
                return [event]
            case TextDelta() | ToolCallStart() | ChoiceEnd() | ToolCallArgumentsDelta() | LogprobsDelta() | \
                    ReasoningDelta() if event.choice_index >= len(calls):
                return []  # a choice the request did not ask for
        return [event]

    def _prepare(self, card: ModelCard, served: ServedModel, request: ChatRequest, images: tuple[DecodedImage, ...],
                 max_context_tokens: int) -> tuple[OutputPlan, EnginePrompt, list[Constraint | None]]:
        """(A worker thread: this work grows with the request, and the event loop only moves bytes.) The request
        rendered and encoded, and its grammar compiled once per choice; with `fit_context`, from the longest end of
        the conversation that fits."""
        in_message = image_message_indices(request)
        cuts = conversation_cuts(request.messages) if request.fit_context else [tuple(range(len(request.messages)))]
        attempts: dict[int, tuple[OutputPlan, EnginePrompt]] = {}

        def fits(cut: int) -> bool:
            kept = cuts[cut]
            fitted = dataclasses.replace(request, messages=tuple(request.messages[index] for index in kept))
            plan = plan_chat(card, served.template, fitted, image_marker=served.engine.image_marker,
                             escaper=served.escaper)
            kept_set = set(kept)
            kept_images = tuple(image for image, index in zip(images, in_message, strict=True) if index in kept_set)
            prompt = served.engine.encode_prompt(plan.prompt, kept_images)
            if request.context:
                prompt = continued(request.context, prompt, served.engine.tokens.added_bos)
            attempts[cut] = plan, prompt
            return attempts[cut][1].num_tokens < max_context_tokens

        cut = longest_fitting(len(cuts), fits)
        plan, prompt = attempts[cut]
        prompt = dataclasses.replace(prompt, cache_salt=request.cache_salt)
        if cut > 0:
            logger.info("left out the %d oldest of %d messages to fit a context of %d tokens",
                        len(request.messages) - len(cuts[cut]), len(request.messages), max_context_tokens)
        param = "structured_outputs" if request.grammar is not None else None  # else faisca's own grammar
        constraints = [served.engine.compile_constraint(plan.grammar, param=param) if plan.grammar is not None else None
                       for _ in range(request.num_choices)]
        return plan, prompt, constraints

    async def _generate(
        self, served: ServedModel, request: ChatRequest, plan: OutputPlan, prompt: EnginePrompt,
        max_new_tokens: int, constraints: list[Constraint | None],
    ) -> AsyncIterator[ChatEvent]:
        model = served.card.id
        tally = _Tally(started_at_s=time.perf_counter())

        def choice(index: int) -> AsyncIterator[ChatEvent | _FirstToken]:
            return self._choice_events(served, request, plan, prompt, max_new_tokens, constraints[index], index, tally)

        events = choice(0) if request.num_choices == 1 else _side_by_side(choice, request.num_choices)
        try:
            async for event in events:
                if not isinstance(event, _FirstToken):
                    yield event
        finally:  # closed early (a client gone): the engine stops at once, not when the stream is collected
            await events.aclose()  # type: ignore[attr-defined]
        self.metrics.prompt_tokens.labels(model).inc(prompt.num_tokens)
        self.metrics.generation_tokens.labels(model).inc(tally.num_completion_tokens)
        conversation = prompt.tokens + tuple(tally.answer_tokens)
        yield ChatEnd(Usage(prompt.num_tokens, tally.num_completion_tokens, tally.num_cached_tokens,
                            drafted_tokens=tally.num_drafted, accepted_draft_tokens=tally.num_accepted_drafts),
                      tokens=None if prompt.images else conversation)

    async def _choice_events(
        self, served: ServedModel, request: ChatRequest, plan: OutputPlan, prompt: EnginePrompt,
        max_new_tokens: int, constraint: Constraint | None, choice_index: int, tally: _Tally,
    ) -> AsyncIterator[ChatEvent | _FirstToken]:
        """One choice: its tokens through stop strings and its format's parser, then its end."""
        model = served.card.id
        sampling = request.sampling
        if sampling.seed is not None:  # each choice its own sample, reproducibly
            sampling = dataclasses.replace(sampling, seed=sampling.seed + choice_index)
        stops = StopMatcher(sampling.stop)
        finish_reason: FinishReason = "length"
        stop_reason: str | int | None = None
        calls = _CallEvents(choice_index, plan.new_parser() if plan.new_parser else None)
        num_choice_tokens = 0
        last_token_at_s = tally.started_at_s  # this choice's previous token (read once it has one)
        tokens = served.engine.generate(prompt, sampling, max_new_tokens, constraint)
        try:
            async for event in tokens:
                if isinstance(event, PromptAccepted):
                    tally.num_cached_tokens = max(tally.num_cached_tokens, event.num_cached_tokens)
                    continue
                now_s = time.perf_counter()
                if tally.num_completion_tokens == 0:  # the request's first token, whichever choice it is in
                    self.metrics.time_to_first_token_s.labels(model).observe(now_s - tally.started_at_s)
                elif num_choice_tokens > 0:
                    self.metrics.time_per_output_token_s.labels(model).observe(now_s - last_token_at_s)
                if num_choice_tokens == 0:
                    yield _FirstToken(choice_index)
                last_token_at_s = now_s
                num_choice_tokens += 1
                tally.num_completion_tokens += 1
                tally.num_drafted += event.num_drafted
                tally.num_accepted_drafts += event.is_accepted_draft
                if choice_index == 0 and not (event.is_end and not event.text):  # the end token is no content
                    tally.answer_tokens.append(event.token_id)
                if event.logprobs is not None:
                    yield LogprobsDelta(choice_index, event.logprobs)
                if num_choice_tokens <= sampling.min_tokens:  # stop strings count only after these, as in vLLM
                    text, stop_string = event.text, None
                else:
                    text, stop_string = stops.feed(event.text)
                if stop_string is not None and sampling.include_stop_str_in_output:
                    text += stop_string
                if text:
                    for chat_event in calls.feed(text):
                        yield chat_event
                if stop_string is not None or event.is_end:
                    finish_reason = "stop"
                    stop_reason = event.token_id if event.token_id in sampling.stop_token_ids else stop_string
                    break
        finally:
            await tokens.aclose()  # type: ignore[attr-defined]
        for chat_event in calls.finish(stops.flush() if stops.matched is None else ""):
            yield chat_event
        if calls.num_calls and finish_reason == "stop":
            finish_reason = "tool_calls"
        yield ChoiceEnd(choice_index, finish_reason, stop_reason)


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # inputs × dimensions, float32, each of unit norm
    num_tokens: int  # the inputs' tokens, all together


@dataclass
class _Tally:
    """What a request's choices add up to, and when it started."""

    started_at_s: float
    num_completion_tokens: int = 0
    num_cached_tokens: int = 0
    num_drafted: int = 0  # speculative decoding: drafts verified, and those among the completion tokens
    num_accepted_drafts: int = 0
    answer_tokens: list[int] = field(default_factory=list)  # the first choice's


@dataclass(frozen=True)
class _FirstToken:
    """A choice's first token came: its prompt is in the engine's cache."""

    choice_index: int


@dataclass(frozen=True)
class _ChoiceDone:
    choice_index: int


@dataclass(frozen=True)
class _ChoiceFailed:
    error: Exception


async def _side_by_side(
    choice: Callable[[int], AsyncIterator[ChatEvent | _FirstToken]], num_choices: int,
) -> AsyncIterator[ChatEvent | _FirstToken]:
    """The events of `num_choices` choices as they come, the choices generated side by side (batched by the engine):
    choice 0 first, the others once its first token shows its prompt computed, so that they start from that cached
    prompt instead of all computing it. Closing the stream (or a failing choice) ends every choice."""
    queue: asyncio.Queue[ChatEvent | _FirstToken | _ChoiceDone | _ChoiceFailed] = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for event in choice(index):
                queue.put_nowait(event)
        except Exception as exc:  # handed to the consumer, which raises it
            queue.put_nowait(_ChoiceFailed(exc))
        queue.put_nowait(_ChoiceDone(index))

    tasks = [asyncio.create_task(pump(0))]
    num_done = 0
    try:
        while num_done < num_choices:
            event = await queue.get()
            if isinstance(event, _ChoiceFailed):
                raise event.error
            if isinstance(event, _FirstToken | _ChoiceDone) and event.choice_index == 0 and len(tasks) == 1:
                tasks += [asyncio.create_task(pump(index)) for index in range(1, num_choices)]
            if isinstance(event, _ChoiceDone):
                num_done += 1
            else:
                yield event
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _CallEvents:
    """One choice's text through its format's parser (if any): content, reasoning and tool calls with fresh ids."""

    def __init__(self, choice_index: int, parser: ToolCallParser | None) -> None:
        self._choice_index = choice_index
        self._parser = parser
        self._call_ids: dict[int, str] = {}

    @property
    def num_calls(self) -> int:
        return len(self._call_ids)

    def count_call(self, call_index: int) -> None:
        """A call that came whole from elsewhere (an upstream's native calling)."""
        self._call_ids.setdefault(call_index, "")

    def feed(self, text: str) -> list[ChatEvent]:
        if self._parser is None:
            return [TextDelta(self._choice_index, text)]
        return [self._convert(event) for event in self._parser.feed(text)]

    def finish(self, rest: str) -> list[ChatEvent]:
        events = self.feed(rest) if rest else []
        if self._parser is not None:
            events += [self._convert(event) for event in self._parser.finish()]
        return events

    def _convert(self, event: ParsedEvent) -> ChatEvent:
        index = self._choice_index
        match event:
            case ParsedText(text=text):
                return TextDelta(index, text)
            case ParsedReasoning(text=text):
                return ReasoningDelta(index, text)
            case ParsedCallStart(call_index=call, name=name):
                self._call_ids[call] = new_call_id()
                return ToolCallStart(index, call, self._call_ids[call], name)
            case ParsedCallArguments(call_index=call, text=text):
                return ToolCallArgumentsDelta(index, call, text)
        raise AssertionError(f"unknown parser event {event!r}")


@dataclass
class ChoiceResult:
    index: int
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    stop_reason: str | int | None = None
    # one per generated token when they were asked for; None when not
    logprobs: list[SampledLogprobs] | None = None


@dataclass
class ChatResult:
    choices: list[ChoiceResult] = field(default_factory=list)
    usage: Usage = field(default_factory=lambda: Usage(0, 0))


async def fold_chat(events: AsyncIterator[ChatEvent]) -> ChatResult:
    """The non-streaming answer: the same events, gathered."""
    result = ChatResult()
    texts: dict[int, list[str]] = {}
    reasoning: dict[int, list[str]] = {}
    calls: dict[int, dict[int, tuple[str, str, list[str]]]] = {}  # choice -> call -> (id, name, argument pieces)
    logprobs: dict[int, list[SampledLogprobs]] = {}
    for_choice: dict[int, ChoiceResult] = {}
    async for event in events:
        match event:
            case LogprobsDelta(choice_index=index, logprobs=token_logprobs):
                logprobs.setdefault(index, []).append(token_logprobs)
            case TextDelta(choice_index=index, text=text):
                texts.setdefault(index, []).append(text)
            case ReasoningDelta(choice_index=index, text=text):
                reasoning.setdefault(index, []).append(text)
            case ToolCallStart(choice_index=index, call_index=call, call_id=call_id, name=name):
                calls.setdefault(index, {})[call] = (call_id, name, [])
            case ToolCallArgumentsDelta(choice_index=index, call_index=call, text=text):
                calls[index][call][2].append(text)
            case ChoiceEnd(choice_index=index, finish_reason=finish_reason, stop_reason=stop_reason):
                for_choice[index] = ChoiceResult(
                    index,
                    "".join(texts.get(index, [])),
                    "".join(reasoning.get(index, [])),
                    [ToolCall(call_id, name, "".join(pieces)) for call_id, name, pieces in calls.get(index, {}).values()],
                    finish_reason,
                    stop_reason,
                    logprobs.get(index),
                )
            case ChatEnd(usage=usage):
                result.usage = usage
    result.choices = [for_choice[index] for index in sorted(for_choice)]
    return result
