"""llama.cpp through llama-cpp-python's low-level API, with continuous batching.

One context holds up to `max_num_seqs` sequences in one unified KV cache. One engine thread runs the loop

    drain commands → schedule (a pure policy) → one llama_decode over a batch holding one token per decoding
    sequence plus prompt chunks of prefilling ones → sample each sequence's next token (numpy, from the
    logits row read zero-copy) → hand the tokens to each request's asyncio queue

and sleeps on its command queue when idle (no spinning beside llama.cpp's own threads). The asyncio side only
enqueues, receives tokens (`call_soon_threadsafe`) and aborts. Finished sequences leave their tokens in their
KV slot: a later prompt sharing a prefix with any slot (a system prompt, an earlier turn) starts from there
(`llama_memory_seq_cp` on a unified cache is metadata-only) and reports those tokens as cached.
When the KV cache is full, cached slots are dropped first, then the newest sequence is preempted and later
recomputed (its emitted tokens stay emitted).

Images (with a projector, see `vision.py`) hold positions in a sequence like tokens do; when a sequence reaches
one, the engine encodes it and decodes its embeddings in a llama_decode of their own (Gemma 3 attends across an
image's tokens both ways, which is set per call), before the step's token batch.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import dataclasses
import functools
import itertools
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from faisca.engine.base import (
    EngineEvent, EnginePrompt, EngineStats, LoraInfo, LoraSet, ModelTokens, PromptAccepted, PromptImage, TokenOut,
)
from faisca.engine.batch_invariance import make_batch_invariant
from faisca.engine.draft import DraftModel
from faisca.engine.constraint import ConstraintCompiler, TokenConstraint
from faisca.engine.embeddings import Embedder, EmbeddingJob, pooling_for, take_batch
from faisca.engine.kv_cache import CacheKey, PrefixCache
from faisca.engine.lora import AdapterTable, NoRoomForAdapter
from faisca.engine.logprobs import token_logprobs
from faisca.engine.native_log import NativeLog
from faisca.engine.sampling import TokenSampler
from faisca.engine.speculative import Backoff, SpeculationConfig, propose_ngram, verify
from faisca.engine.tokenizer import PromptTokenizer
from faisca.engine.vision import VisionEncoder
from faisca.errors import EngineError, InvalidRequest, Overloaded
from faisca.limits import MAX_EMBEDDING_INPUT_TOKENS, MAX_EMBEDDING_INPUTS_PER_BATCH
from faisca.images import DecodedImage
from faisca.scheduler import SchedulerConfig, SequenceView, choose_preemption_victim, pick_group, schedule
from faisca.types import LITERAL_CLOSE, LITERAL_OPEN, SampledLogprobs, SamplingParams, TokenLogprob

logger = logging.getLogger("faisca.engine")

_END_OF_STREAM = object()
_LITERAL = re.compile(f"{re.escape(LITERAL_OPEN)}(.*?){re.escape(LITERAL_CLOSE)}", re.DOTALL)


def available_cores() -> int:
    """The cores this process may run on (its affinity), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def read_gguf_metadata(gguf_path: Path) -> dict[str, str]:
    """A GGUF's metadata, read by llama.cpp itself (its vocabulary only is loaded, not the weights)."""
    return read_gguf_header(gguf_path)[0]


def read_gguf_header(gguf_path: Path) -> tuple[dict[str, str], int]:
    """A GGUF's metadata and the size of its vocabulary (its vocabulary only is loaded, not the weights)."""
    import llama_cpp
    from llama_cpp import _internals

    if not gguf_path.is_file():
        raise EngineError(f"{gguf_path} is not a file")
    NativeLog.install()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    try:
        model = _internals.LlamaModel(path_model=str(gguf_path), params=params, verbose=False)
    except ValueError:
        raise EngineError(f"{gguf_path} is not a GGUF model llama.cpp can load") from None
    try:
        return model.metadata(), model.n_vocab()
    finally:
        model.close()


class IncrementalDetokenizer:
    """Token ids → text, one token at a time, never splitting a UTF-8 character across two pieces (a byte-fallback
    token can carry half of one: its bytes wait for the rest)."""

    def __init__(self, token_bytes: Callable[[int], bytes]) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, token: int) -> str:
        return self._decoder.decode(self._token_bytes(token))

    def flush(self) -> str:
        """What is left at the end (an incomplete character becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)


@dataclass(eq=False)
class _Sequence:
    """One generation, owned by the engine thread once submitted."""

    request_id: int
    tokens: list[int]  # prompt, then generated
    num_prompt_tokens: int
    max_new_tokens: int
    sampler: TokenSampler
    detokenizer: IncrementalDetokenizer
    emit: Callable[[object], None]
    constraint: TokenConstraint | None = None
    images: tuple[PromptImage, ...] = ()
    cache_salt: str | None = None  # prefixes are shared only with sequences of the same salt
    loras: LoraSet = ()  # the LoRA adapters it is computed under
    slot: int = -1
    num_computed: int = 0  # tokens whose KV is in the cache
    was_started: bool = False
    backoff: Backoff = field(default_factory=Backoff)  # speculative decoding's, for this sequence
    # while a speculative step is verified: the drafts not yet reported in a token, and the draft at the row sampled
    num_unreported_drafts: int = 0
    draft_at_row: int | None = None

    @property
    def num_generated(self) -> int:
        return len(self.tokens) - self.num_prompt_tokens

    @property
    def cache_key(self) -> CacheKey:
        return CacheKey(self.cache_salt, self.loras)

    def view(self) -> SequenceView:
        """What this step's batch can take of it: the text up to its next image; 1 when it has reached an image
        (fed in a decode of its own, or still being encoded), so its tokens never hold batch room it cannot use."""
        if self.image_at(self.num_computed) is not None:
            return SequenceView(self.request_id, 1, self.loras)
        return SequenceView(self.request_id, self.text_end(self.num_computed, len(self.tokens)) - self.num_computed,
                            self.loras)

    def image_at(self, position: int) -> PromptImage | None:
        return next((image for image in self.images if image.start == position), None)

    def text_end(self, position: int, limit: int) -> int:
        """Where a run of tokens fed from `position` must stop: at `limit`, or at the next image."""
        return min([limit, *(image.start for image in self.images if image.start > position)])

    def reusable_prefix(self, length: int) -> int:
        """`length` cached positions, cut back to the start of an image it would split."""
        for image in self.images:
            if image.start < length < image.start + image.num_tokens:
                return image.start
        return length


def _send_to_loop(loop: asyncio.AbstractEventLoop, events: asyncio.Queue[object], event: object) -> None:
    """Called on the engine thread. A loop that has gone away (its server shut down) drops the event; the engine
    thread must never die of it, or every later request would wait forever."""
    try:
        loop.call_soon_threadsafe(events.put_nowait, event)
    except RuntimeError:
        logger.debug("event for a closed event loop dropped")


class LlamaCppEngine:
    def __init__(self, model: object, context: object, *, name: str, max_context_tokens: int,
                 scheduler: SchedulerConfig, vision: VisionEncoder | None = None, max_loras: int = 8,
                 num_threads: int = 1, speculation: SpeculationConfig | None = None,
                 draft: DraftModel | None = None) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._model = model
        self._context = context
        self._ctx = context.ctx  # type: ignore[attr-defined]
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = model.vocab  # type: ignore[attr-defined]
        self._num_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._scheduler = scheduler
        self._batch = llama_cpp.llama_batch_init(scheduler.max_batch_tokens, 0, 1)
        self._max_context_tokens = max_context_tokens
        self._vision = vision
        bos, eos = model.token_bos(), model.token_eos()  # type: ignore[attr-defined]
        self._tokens = ModelTokens(
            bos_text=model.token_get_text(bos) if bos >= 0 else "",  # type: ignore[attr-defined]
            eos_text=model.token_get_text(eos) if eos >= 0 else "",  # type: ignore[attr-defined]
            added_bos=bos if model.add_bos_token() and bos >= 0 else None,  # type: ignore[attr-defined]
        )
        self._bos = bos
        self._add_bos = bool(model.add_bos_token()) and bos >= 0  # type: ignore[attr-defined]
        self._metadata: dict[str, str] = model.metadata()  # type: ignore[attr-defined]
        self._chat_template = self._metadata.get("tokenizer.chat_template")
        end_tokens = [eos] + [t for t in range(self._num_vocab) if t != eos and llama_cpp.llama_vocab_is_eog(self._vocab, t)]
        self._tokenizer = PromptTokenizer(self._vocab, num_vocab=self._num_vocab)
        self._end_tokens = tuple(end_tokens)
        self._constraints = ConstraintCompiler(self._vocab, num_vocab=self._num_vocab, end_tokens=end_tokens)
        self._request_ids = itertools.count()
        self._num_threads = num_threads
        self._embedder: Embedder | None = None  # made on the engine thread by the first embedding request
        self._embedding_jobs: deque[EmbeddingJob] = deque()  # engine-thread state
        # engine-thread state
        self._inbox: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._waiting: deque[_Sequence] = deque()
        self._running: dict[int, _Sequence] = {}  # admission order
        self._slots = PrefixCache(scheduler.max_num_seqs)
        self._adapters = AdapterTable(max_resident=max_loras, load=self._load_adapter, free=self._free_adapter)
        self._applied_loras: LoraSet = ()  # the adapter set on the context now
        self._group_served_at: dict[LoraSet, int] = {}  # adapter set -> the step it last ran in
        self._num_steps = 0
        self._fed_last_step = False
        self._speculation = speculation
        self._draft = draft  # the draft model, with speculation by "draft"
        self._num_draft_tokens = 0  # read by other threads (ints: atomic under the GIL)
        self._num_accepted_tokens = 0
        # After a preemption, no more sequences run than did then, until one finishes (else the preempted one
        # would be let in again at once, and preempted again).
        self._max_running_under_pressure: int | None = None
        self._exit_reason: str | None = None  # set when the engine thread ends, before it fails what is left
        self._thread = threading.Thread(target=self._run_thread, name=f"engine-{name}", daemon=True)
        self._thread.start()

    @classmethod
    def load(
        cls,
        gguf_path: Path,
        *,
        name: str,
        max_context_tokens: int,
        num_threads: int,
        max_num_seqs: int = 8,
        max_batch_tokens: int = 512,
        kv_cache_tokens: int | None = None,
        projector_path: Path | None = None,
        max_loras: int = 8,
        speculation: SpeculationConfig | None = None,
        draft_path: Path | None = None,
    ) -> LlamaCppEngine:
        """Load the weights and make the context (blocking: call it off the event loop)."""
        import llama_cpp
        from llama_cpp import _internals

        NativeLog.install()
        started_s = time.monotonic()
        kv_cache_tokens = max(kv_cache_tokens or max_context_tokens, max_context_tokens)
        logger.info("loading %s from %s (context %d tokens per sequence, KV cache %d tokens, %d sequences, %d threads)",
                    name, gguf_path, max_context_tokens, kv_cache_tokens, max_num_seqs, num_threads)
        model_params, params = llama_cpp.llama_model_default_params(), llama_cpp.llama_context_default_params()
        # No extra buffer types (AMX, repacked weights): on this CPU (Xeon with AMX) llama.cpp 0.3.36's AMX matmul
        # segfaults in the first llama_decode; plain CPU buffers run everywhere. Then the settings that make a token's
        # numbers independent of its batch (temperature 0 reproducible, README "Reproducibility").
        make_batch_invariant(model_params, params)
        model = _internals.LlamaModel(path_model=str(gguf_path), params=model_params, verbose=False)
        params.n_ctx = kv_cache_tokens
        params.n_batch = params.n_ubatch = max_batch_tokens
        params.n_seq_max = max_num_seqs
        params.n_threads = params.n_threads_batch = num_threads
        params.kv_unified = True  # sequences share cells: prefix copies are metadata-only
        params.swa_full = True  # sliding-window layers keep every cell, so prefixes can be reused
        params.no_perf = True
        try:
            context = _internals.LlamaContext(model=model, params=params, verbose=False)
        except ValueError:  # a Q8_0 V cache needs a head size that is a multiple of 32
            logger.warning("%s: no Q8_0 V cache for this model: its results depend on the batch", name)
            params.type_v = llama_cpp.GGML_TYPE_F16
            context = _internals.LlamaContext(model=model, params=params, verbose=False)
        vision = None
        if projector_path is not None:
            try:
                vision = VisionEncoder.load(projector_path, model, num_threads=num_threads,
                                            max_batch_tokens=max_batch_tokens)
            except BaseException:
                context.close()
                model.close()
                raise
            logger.info("%s reads images through the projector %s", name, projector_path)
        logger.info("loaded %s in %.1f s", name, time.monotonic() - started_s)
        scheduler = SchedulerConfig(max_num_seqs=max_num_seqs, max_batch_tokens=max_batch_tokens)
        draft = None
        if speculation is not None and speculation.method == "draft":
            if draft_path is None:
                raise EngineError("speculation by a draft model needs the draft's GGUF")
            try:
                draft = DraftModel.load(draft_path, kv_cache_tokens=kv_cache_tokens, max_num_seqs=max_num_seqs,
                                        max_batch_tokens=max_batch_tokens, num_threads=num_threads)
            except BaseException:
                if vision is not None:
                    vision.close()
                context.close()
                model.close()
                raise
            logger.info("%s drafts with %s", name, draft_path)
        if speculation is not None:
            logger.info("%s speculates (%s), up to %d draft tokens a step, while at most %d sequences run",
                        name, speculation.method, speculation.max_draft_tokens, speculation.max_sequences)
        return cls(model, context, name=name, max_context_tokens=max_context_tokens, scheduler=scheduler, vision=vision,
                   max_loras=max_loras, num_threads=num_threads, speculation=speculation, draft=draft)

    # --- the Engine interface (event-loop side)

    @property
    def max_context_tokens(self) -> int:
        return self._max_context_tokens

    @property
    def tokens(self) -> ModelTokens:
        return self._tokens

    @property
    def chat_template_source(self) -> str | None:
        return self._chat_template

    @property
    def metadata(self) -> dict[str, str]:
        return self._metadata

    @property
    def vocab_size(self) -> int:
        return self._num_vocab

    @property
    def stats(self) -> EngineStats:
        # read from another thread: len() of a dict or deque is atomic under the GIL
        return EngineStats(len(self._running), len(self._waiting), self._num_draft_tokens, self._num_accepted_tokens)

    @property
    def is_alive(self) -> bool:
        return self._exit_reason is None and self._thread.is_alive()

    @property
    def image_marker(self) -> str | None:
        return self._vision.marker if self._vision is not None else None

    def _lacks_bos(self, tokens: Sequence[int]) -> bool:
        """The model wants a BOS token first and the rendered prompt did not bring one."""
        return self._add_bos and (not tokens or tokens[0] != self._bos)

    @property
    def control_texts(self) -> frozenset[str]:
        return self._tokenizer.control_texts

    def encode_prompt(self, prompt: str, images: Sequence[DecodedImage] = ()) -> EnginePrompt:
        if not images:
            pieces = EnginePrompt(tuple(self._tokenize(prompt)))
        elif self._vision is None:
            raise InvalidRequest("this model reads no images (it has no projector)", param="messages")
        else:
            pieces = self._vision.prompt_pieces(prompt, images, tokenize=self._tokenize)
        if self._lacks_bos(pieces.tokens):
            shifted = tuple(dataclasses.replace(image, start=image.start + 1) for image in pieces.images)
            return EnginePrompt((self._bos, *pieces.tokens), shifted)
        return pieces

    def _tokenize(self, prompt: str) -> list[int]:
        """Special tokens parsed, except in the text between LITERAL_OPEN and LITERAL_CLOSE (a client's)."""
        if LITERAL_OPEN not in prompt:
            return self._tokenizer.tokenize(prompt, parse_special=True)
        tokens: list[int] = []
        for index, piece in enumerate(_LITERAL.split(prompt)):  # markup, literal, markup, literal, …
            tokens += self._tokenizer.tokenize(piece, parse_special=index % 2 == 0)
        return tokens

    def compile_constraint(self, grammar: str, *, param: str | None = None) -> TokenConstraint:
        return self._constraints.compile(grammar, param=param)

    # --- tokens and embeddings (the vocabulary is read-only: any thread may tokenize)

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """As `llama_tokenize`: BOS (and EOS, for models that want one, as BERT's do) added with `add_special`."""
        tokens = self._tokenizer.tokenize(text, parse_special=parse_special)
        if add_special:
            if self._add_bos and (not tokens or tokens[0] != self._bos):
                tokens.insert(0, self._bos)
            eos = self._model.token_eos()  # type: ignore[attr-defined]
            if self._lib.llama_vocab_get_add_eos(self._vocab) and eos >= 0:
                tokens.append(eos)
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of `tokens` (special tokens written out), invalid UTF-8 replaced."""
        return self._model.detokenize(list(tokens), special=True).decode("utf-8", errors="replace")  # type: ignore[attr-defined,no-any-return]

    def token_piece(self, token: int) -> str:
        return self._token_bytes(token).decode("utf-8", errors="replace")

    @property
    def embedding_dimensions(self) -> int:
        return int(self._lib.llama_model_n_embd(self._model.model))  # type: ignore[attr-defined]

    @property
    def max_embedding_tokens(self) -> int:
        return min(self._max_context_tokens, MAX_EMBEDDING_INPUT_TOKENS)

    async def embed(self, inputs: Sequence[Sequence[int]]) -> np.ndarray:
        """Unit vectors (inputs × `embedding_dimensions`, float32) for token sequences of 1 to `max_embedding_tokens`
        tokens each, embedded by the engine thread between generation steps, batched with other requests' inputs."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[object] = loop.create_future()

        def settle(result: object) -> None:
            if not done.done():
                done.set_exception(result) if isinstance(result, BaseException) else done.set_result(result)

        def reply(result: object) -> None:  # on the engine thread
            try:
                loop.call_soon_threadsafe(settle, result)
            except RuntimeError:
                pass  # the event loop has gone away

        job = EmbeddingJob(inputs, reply)
        self._inbox.put(("embed", job))
        if not self.is_alive:
            raise EngineError(f"the engine has stopped: {self._exit_reason or 'its thread is not running'}")
        try:
            return await done  # type: ignore[return-value]
        finally:
            job.is_cancelled = True  # read by the engine thread: a request gone away embeds nothing more

    async def generate(
        self, prompt: EnginePrompt, sampling: SamplingParams, max_new_tokens: int,
        constraint: TokenConstraint | None = None,
    ) -> AsyncIterator[EngineEvent]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[object] = asyncio.Queue()
        sequence = _Sequence(
            request_id=next(self._request_ids),
            tokens=list(prompt.tokens),
            num_prompt_tokens=prompt.num_tokens,
            max_new_tokens=max_new_tokens,
            images=prompt.images,
            cache_salt=prompt.cache_salt,
            loras=prompt.loras,
            # a grammar decides where a constrained answer ends: its end tokens are never banned
            sampler=TokenSampler(sampling, prompt_tokens=prompt.tokens, end_tokens=() if constraint else self._end_tokens),
            detokenizer=IncrementalDetokenizer(lambda token: self._model.detokenize([token], special=False)),  # type: ignore[attr-defined]
            emit=functools.partial(_send_to_loop, loop, events),
            constraint=constraint,
        )
        self._inbox.put(("add", sequence))
        if not self.is_alive:  # checked after the put: a thread that ends later fails what is left in its inbox
            raise EngineError(f"the engine has stopped: {self._exit_reason or 'its thread is not running'}")
        is_finished = False
        try:
            while (event := await events.get()) is not _END_OF_STREAM:
                if isinstance(event, BaseException):
                    raise EngineError(f"generation failed: {event}") from event
                yield event  # type: ignore[misc]
            is_finished = True
        finally:
            if not is_finished:  # closed early or cancelled: free the sequence at the next step
                self._inbox.put(("abort", sequence.request_id))

    @property
    def lora_adapters(self) -> list[LoraInfo]:
        return [LoraInfo(adapter.id, adapter.name, adapter.path) for adapter in self._adapters.listed()]

    async def load_lora(self, name: str, path: Path) -> LoraInfo:
        adapter = await self._on_engine_thread("load_lora", (name, path))
        return LoraInfo(adapter.id, adapter.name, adapter.path)  # type: ignore[attr-defined]

    async def unload_lora(self, name: str) -> None:
        await self._on_engine_thread("unload_lora", name)

    async def _on_engine_thread(self, command: str, argument: object) -> object:
        """Run a command between two steps (llama.cpp's adapters are only touched there) and wait for its result."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[object] = loop.create_future()

        def reply(result: object) -> None:  # on the engine thread
            def settle() -> None:
                if done.done():
                    return
                if isinstance(result, BaseException):
                    done.set_exception(result)
                else:
                    done.set_result(result)
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:
                pass  # the event loop has gone away

        self._inbox.put((command, (argument, reply)))
        if not self.is_alive:
            raise EngineError(f"the engine has stopped: {self._exit_reason or 'its thread is not running'}")
        return await done

    async def close(self) -> None:
        self._inbox.put(("stop", None))
        await asyncio.to_thread(self._thread.join)
        if self._embedder is not None:
            self._embedder.close()
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_set_adapters_lora(self._ctx, None, 0, None)
        self._adapters.close()
        if self._vision is not None:
            self._vision.close()
        if self._draft is not None:
            self._draft.close()
        self._context.close()  # type: ignore[attr-defined]
        self._model.close()  # type: ignore[attr-defined]

    # --- the engine thread

    def _run_thread(self) -> None:
        """The engine thread: the loop; when it ends, for whatever reason, every request it holds or has not taken
        yet gets an error (a request added later fails in `generate`, which checks `is_alive` after adding)."""
        reason = "the engine is shutting down"
        try:
            self._loop()
        except BaseException as exc:  # the loop died: nothing would ever answer its requests
            logger.critical("the engine thread ended unexpectedly", exc_info=exc)
            reason = f"the engine thread ended unexpectedly: {exc!r}"
        finally:
            self._exit_reason = reason
            error = EngineError(reason)
            left = [*self._running.values(), *self._waiting]
            while True:
                try:
                    command, argument = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if command == "add":
                    left.append(argument)  # type: ignore[arg-type]
                elif command in ("load_lora", "unload_lora"):
                    argument[1](error)  # type: ignore[index]
                elif command == "embed":
                    argument.answer(error)  # type: ignore[attr-defined]
            for job in self._embedding_jobs:
                job.answer(error)
            self._embedding_jobs.clear()
            self._running.clear()
            self._waiting.clear()
            for sequence in left:
                sequence.emit(error)
                sequence.emit(_END_OF_STREAM)

    def _loop(self) -> None:
        # Sleep on the inbox when there is nothing to run, or when a step could do nothing (every sequence waits for
        # its image's encoding, which posts a wake-up when done).
        is_idle = True
        while self._take_commands(block=is_idle):
            did_something = self._embed_batch() if self._embedding_jobs else False  # one batch, then a step
            if self._running or self._waiting:
                try:
                    did_something |= self._step()
                except Exception as exc:  # never leave requests hanging
                    logger.exception("engine step failed")
                    for sequence in [*self._running.values(), *self._waiting]:
                        self._finish(sequence, error=exc)
            is_idle = not did_something
        # what is still running or waiting now is failed by `_run_thread`, however the loop ended

    def _take_commands(self, *, block: bool) -> bool:
        """Apply queued commands (waiting for one if `block`); False once asked to stop."""
        try:
            command, argument = self._inbox.get(block=block)
        except queue.Empty:
            return True
        while True:
            match command:
                case "stop":
                    return False
                case "add":
                    self._waiting.append(argument)  # type: ignore[arg-type]
                case "abort":
                    self._abort(argument)  # type: ignore[arg-type]
                case "wake":  # an image's encoding is done
                    pass
                case "embed":
                    self._embedding_jobs.append(argument)  # type: ignore[arg-type]
                case "load_lora" | "unload_lora":
                    (payload, reply) = argument  # type: ignore[misc]
                    reply(self._adapter_command(command, payload))
            try:
                command, argument = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _embed_batch(self) -> bool:
        """Embed one batch of the waiting inputs (several requests' together); answer the jobs it completes."""
        jobs = self._embedding_jobs = deque(job for job in self._embedding_jobs if not job.is_cancelled)
        if not jobs:
            return False
        try:
            if self._embedder is None:
                self._embedder = Embedder(self._model, pooling=pooling_for(self._metadata),
                                          max_tokens=self.max_embedding_tokens,
                                          max_inputs=MAX_EMBEDDING_INPUTS_PER_BATCH, num_threads=self._num_threads)
            taken = take_batch(jobs, max_tokens=self._scheduler.max_batch_tokens, max_inputs=self._embedder.max_inputs)
            vectors = self._embedder.embed([job.inputs[index] for job, index in taken])
        except Exception as exc:  # these requests fail; generation goes on
            logger.exception("embedding failed")
            for job in jobs:
                job.answer(exc if isinstance(exc, EngineError) else EngineError(f"embedding failed: {exc}"))
            jobs.clear()
            return True
        for row, (job, index) in enumerate(taken):
            if job.vectors is None:
                job.vectors = np.empty((len(job.inputs), vectors.shape[1]), dtype=np.float32)
            job.vectors[index] = vectors[row]
            job.num_done = index + 1
        for job in [job for job in jobs if job.num_done == len(job.inputs)]:
            jobs.remove(job)
            job.answer(job.vectors)
        return True

    def _abort(self, request_id: int) -> None:
        for sequence in [*self._running.values(), *self._waiting]:
            if sequence.request_id == request_id:
                self._finish(sequence)

    def _wake(self) -> None:
        self._inbox.put(("wake", None))

    def _step(self) -> bool:
        """One step; False if it could do nothing at all."""
        config = self._scheduler
        if self._max_running_under_pressure is not None:
            config = dataclasses.replace(config, max_num_seqs=self._max_running_under_pressure)
        did_something = False
        while self._waiting and len(self._running) < config.max_num_seqs:  # admission: first come, while slots last
            sequence = self._waiting[0]
            outcome = self._start(sequence)
            if outcome == "wait":
                break  # its adapters wait for room: it stays first in line
            if outcome == "started":
                self._waiting.popleft()
            did_something = True  # started, or failed (and gone from the line)
        # one adapter set a step (llama.cpp applies one to a whole decode): the sets present take turns
        running = [s.view() for s in self._running.values()]
        group = pick_group(running, self._group_served_at)
        plan = schedule(running, [], config, group=group)
        chunks = [(self._running[request_id], num_planned) for request_id, num_planned in plan.chunks]
        if not chunks:
            return did_something
        self._num_steps += 1
        self._group_served_at[group] = self._num_steps  # type: ignore[index]
        self._apply_loras(group)  # type: ignore[arg-type]
        text_chunks = []
        for sequence, num_planned in chunks:  # images first: their decodes would overwrite the step's logits
            if (image := sequence.image_at(sequence.num_computed)) is None:
                text_chunks.append((sequence, num_planned))
                continue
            outcome = self._feed_image(sequence, image)
            if outcome == "no room":
                return True
            did_something |= outcome != "waiting"
        batch = self._batch
        num_tokens = 0
        to_sample: list[tuple[_Sequence, int, int]] = []  # (sequence, batch row with logits, tokens fed)
        speculating, drafts = self._pick_speculation(text_chunks, budget=config.max_batch_tokens - plan.num_tokens)
        for sequence, num_planned in text_chunks:
            if sequence is speculating:
                continue  # its rows go last (see `_pick_speculation`)
            start = sequence.num_computed
            # a reused prefix may have shrunk what is left; an image ends the run
            num_fed = sequence.text_end(start, min(start + num_planned, len(sequence.tokens))) - start
            for position in range(start, start + num_fed):
                batch.token[num_tokens] = sequence.tokens[position]
                batch.pos[num_tokens] = position
                batch.n_seq_id[num_tokens] = 1
                batch.seq_id[num_tokens][0] = sequence.slot
                batch.logits[num_tokens] = position == len(sequence.tokens) - 1
                num_tokens += 1
            to_sample.append((sequence, num_tokens - 1, num_fed))
        if speculating is not None:
            first_row = num_tokens
            start = sequence_start = speculating.num_computed
            for position, token in enumerate([speculating.tokens[start], *drafts], start=sequence_start):
                batch.token[num_tokens] = token
                batch.pos[num_tokens] = position
                batch.n_seq_id[num_tokens] = 1
                batch.seq_id[num_tokens][0] = speculating.slot
                batch.logits[num_tokens] = True
                num_tokens += 1
        if num_tokens == 0:  # images only, or nothing: this group's sequences wait for their images' encoding
            # another adapter set may have work: its turn comes at once, unless the last step fed nothing either
            # (then every set waits, and the loop sleeps until an encoding wakes it)
            fed_before, self._fed_last_step = self._fed_last_step, False
            return did_something or (fed_before and len({view.group for view in running}) > 1)
        batch.n_tokens = num_tokens
        status = self._lib.llama_decode(self._ctx, batch)
        if status == 1:  # no room in the KV cache for this batch: nothing was computed
            self._make_room()
            return True
        if status != 0:
            raise EngineError(f"llama_decode failed with status {status}")
        self._fed_last_step = True
        for sequence, row, num_fed in to_sample:
            sequence.num_computed += num_fed
            if sequence.num_computed == len(sequence.tokens):
                self._sample(sequence, row)
        if speculating is not None:
            self._verify(speculating, first_row, drafts)
        return True

    def _pick_speculation(self, chunks: list[tuple[_Sequence, int]], *, budget: int) -> tuple[_Sequence | None, list[int]]:
        """The sequence that speculates this step, and its drafts; (None, []) when none does. At most one a step, and
        its rows go last in the batch: the KV cells of its rejected drafts are then the last ones taken, and freeing
        them leaves no hole before any sequence's later tokens (attention visits a sequence's cells in cell order, so
        a later token placed before an earlier one would round differently: README "Reproducibility"). Only while
        few sequences decode, within what the step's token budget leaves after the plan."""
        config = self._speculation
        if config is None or budget <= 0:
            return None, []
        decoding = [sequence for sequence, _ in chunks if sequence.num_computed == len(sequence.tokens) - 1]
        if len(decoding) > config.max_sequences or len(self._running) > config.max_sequences:
            return None, []
        for sequence in decoding:
            asked = sequence.sampler.params.max_draft_tokens
            limit = sequence.backoff.max_tokens(min(config.max_draft_tokens if asked is None else asked, budget,
                                                    sequence.max_new_tokens - sequence.num_generated - 1))
            if limit <= 0 or not sequence.backoff.wants_draft():
                continue
            if self._draft is not None:
                # the draft model reads no images: it drafts from the text around them
                text = [token for token in sequence.tokens if token >= 0] if sequence.images else sequence.tokens
                try:
                    drafts = self._draft.propose(sequence.slot, text, limit, key=sequence.cache_key)
                except EngineError:  # drafts only ever change the speed: the step goes on without them
                    logger.exception("the draft model failed; drafting goes on at the next proposal")
                    drafts = []
            else:
                drafts = propose_ngram(sequence.tokens, max_tokens=limit, min_ngram=config.min_ngram,
                                       max_ngram=config.max_ngram)
            if drafts:
                return sequence, drafts
        return None, []

    def _verify(self, sequence: _Sequence, first_row: int, drafts: list[int]) -> None:
        """Sample the speculating sequence's rows in order (`speculative.verify`), each as a single-token step would,
        then drop the KV of the drafts not kept."""

        def sample_row(row: int) -> int | None:
            sequence.num_computed = len(sequence.tokens)  # the KV up to this row's input is the sequence's own
            sequence.draft_at_row = drafts[row] if row < len(drafts) else None
            self._sample(sequence, first_row + row)
            return sequence.tokens[-1] if sequence.request_id in self._running else None

        sequence.num_unreported_drafts = len(drafts)  # told with the step's first token (a response's usage)
        num_accepted = verify(drafts, sample_row)
        sequence.draft_at_row = None
        sequence.backoff.record(len(drafts), num_accepted)
        self._num_draft_tokens += len(drafts)
        self._num_accepted_tokens += num_accepted
        if not self._lib.llama_memory_seq_rm(self._memory, sequence.slot, sequence.num_computed, -1):
            raise EngineError("llama.cpp cannot drop rejected draft tokens from this model's KV cache")

    def _sample(self, sequence: _Sequence, row: int) -> None:
        """Pick and hand out the sequence's next token from batch row `row`. What fails here (its sampler, its
        grammar) is the sequence's own failure: it ends alone, the others in the batch go on."""
        try:
            raw_logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, row), shape=(self._num_vocab,))
            logits = raw_logits if sequence.constraint is None else sequence.constraint.masked(raw_logits)
            token = sequence.sampler.sample(logits)
            num_top = sequence.sampler.params.top_logprobs
            self._accept(sequence, token, None if num_top is None else self._logprobs(raw_logits, token, num_top))
        except Exception as exc:
            logger.exception("request %d failed while sampling", sequence.request_id)
            self._finish(sequence, error=exc)

    def _feed_image(self, sequence: _Sequence, image: PromptImage) -> Literal["fed", "waiting", "failed", "no room"]:
        """Store the image a prefilling sequence has reached: "fed"; "waiting" while the encoder thread works on it;
        "failed" (the sequence ends with the error); "no room" in the KV cache (room is made; the step ends, to be
        planned again)."""
        assert self._vision is not None, "a prompt with images reached an engine without a projector"
        try:
            embeddings = self._vision.embeddings(image, owner=sequence.request_id, on_ready=self._wake)
        except EngineError as exc:
            self._finish(sequence, error=exc)
            return "failed"
        if embeddings is None:
            return "waiting"
        status = self._vision.feed(image, embeddings, self._ctx, slot=sequence.slot)
        if status == 1:
            self._make_room()
            return "no room"
        if status != 0:  # the image's own decode failed: its sequence ends, the others go on
            self._finish(sequence, error=EngineError(f"feeding an image failed with status {status}"))
            return "failed"
        sequence.num_computed += image.num_tokens
        return "fed"

    def _start(self, sequence: _Sequence) -> Literal["started", "wait", "failed"]:
        """Give the sequence a KV slot, starting from the longest prefix any slot of its key already holds: "started";
        "wait" (nothing done) while its LoRA adapters cannot be made resident yet; "failed" (it ended with the
        error)."""
        try:
            self._adapters.acquire(adapter_id for adapter_id, _ in sequence.loras)
        except NoRoomForAdapter:
            return "wait"
        except KeyError as exc:
            self._finish(sequence, error=InvalidRequest(f"the LoRA adapter `{exc.args[0]}` was unloaded", param="model"))
            return "failed"
        except ValueError as exc:
            self._finish(sequence, error=EngineError(f"loading a LoRA adapter again failed: {exc}"))
            return "failed"
        memory, lib, slots = self._memory, self._lib, self._slots
        running = ((s.slot, s.cache_key, s.tokens[: s.num_computed]) for s in self._running.values())
        best_slot, best_len = slots.longest_prefix(sequence.cache_key, sequence.tokens, running)
        reuse = sequence.reusable_prefix(min(best_len, len(sequence.tokens) - 1))  # at least one token is fed, for logits
        if reuse > 0 and best_slot in slots.cached:
            slot = best_slot
            slots.take(slot)
            if not lib.llama_memory_seq_rm(memory, slot, reuse, -1):
                lib.llama_memory_seq_rm(memory, slot, -1, -1)
                reuse = 0
        else:
            slot = slots.take_least_recent()
            lib.llama_memory_seq_rm(memory, slot, -1, -1)
            if reuse > 0:
                lib.llama_memory_seq_cp(memory, best_slot, slot, 0, reuse)
        sequence.slot, sequence.num_computed = slot, reuse
        self._running[sequence.request_id] = sequence
        if not sequence.was_started:
            sequence.was_started = True
            sequence.emit(PromptAccepted(num_cached_tokens=reuse))
        return "started"

    # --- LoRA adapters (the engine thread)

    def _adapter_command(self, command: str, payload: object) -> object:
        """A load or unload asked for by the event loop; the result, or the exception to raise there."""
        try:
            if command == "load_lora":
                name, path = payload  # type: ignore[misc]
                return self._adapters.register(name, path)
            return self._adapters.unregister(payload)  # type: ignore[arg-type]
        except NoRoomForAdapter:
            return Overloaded(f"every one of the {self._adapters.max_resident} resident LoRA adapters is in use "
                              "(--max-loras); retry shortly", retry_after_s=1)
        except KeyError:
            return InvalidRequest(f"no LoRA adapter named `{payload}` is loaded", param="lora_name")
        except ValueError as exc:
            return InvalidRequest(str(exc), param="lora_path")

    def _load_adapter(self, path: Path) -> object:
        log = NativeLog.install()
        log.recent_errors.clear()
        adapter = self._lib.llama_adapter_lora_init(self._model.model, str(path).encode())  # type: ignore[attr-defined]
        if not adapter:
            why = "; ".join(log.recent_errors) or "see the server log"
            raise ValueError(f"{path} is not a LoRA adapter llama.cpp can apply to this model ({why})")
        return adapter

    def _free_adapter(self, adapter: object) -> None:
        if any(self._adapters.handle(adapter_id) is adapter for adapter_id, _ in self._applied_loras):
            self._apply_loras(())  # never free what the context still points at
        self._lib.llama_adapter_lora_free(adapter)

    def _apply_loras(self, loras: LoraSet) -> None:
        """Put the step's adapter set on the context (llama.cpp does nothing when it is the one already set)."""
        if loras == self._applied_loras:
            return
        lib = self._lib
        if loras:
            handles = (lib.llama_adapter_lora_p_ctypes * len(loras))(
                *(self._adapters.handle(adapter_id) for adapter_id, _ in loras))
            scales = (ctypes.c_float * len(loras))(*(scale for _, scale in loras))
            status = lib.llama_set_adapters_lora(self._ctx, handles, len(loras), scales)
        else:
            status = lib.llama_set_adapters_lora(self._ctx, None, 0, None)
        if status != 0:
            raise EngineError(f"setting the LoRA adapters failed with status {status}")
        self._applied_loras = loras

    def _logprobs(self, raw_logits: np.ndarray, token: int, num_top: int) -> SampledLogprobs:
        chosen, top = token_logprobs(raw_logits, token, num_top)
        return SampledLogprobs(TokenLogprob(self._token_bytes(token), chosen),
                               tuple(TokenLogprob(self._token_bytes(other), value) for other, value in top))

    def _token_bytes(self, token: int) -> bytes:
        """A token's text as the model writes it, special tokens (`<end_of_turn>`) included."""
        return self._model.detokenize([token], special=True)  # type: ignore[attr-defined,no-any-return]

    def _accept(self, sequence: _Sequence, token: int, logprobs: SampledLogprobs | None) -> None:
        sequence.tokens.append(token)
        num_drafted, sequence.num_unreported_drafts = sequence.num_unreported_drafts, 0

        def out(text: str, *, is_end: bool = False) -> TokenOut:
            return TokenOut(token, text, is_end=is_end, logprobs=logprobs, num_drafted=num_drafted,
                            is_accepted_draft=token == sequence.draft_at_row)

        if self._lib.llama_vocab_is_eog(self._vocab, token) or token in sequence.sampler.params.stop_token_ids:
            sequence.emit(out(sequence.detokenizer.flush(), is_end=True))
            self._finish(sequence)
            return
        text = sequence.detokenizer.decode(token)
        is_complete = sequence.constraint is not None and sequence.constraint.accept(token)
        if is_complete or sequence.num_generated >= sequence.max_new_tokens:
            sequence.emit(out(text + sequence.detokenizer.flush(), is_end=is_complete))
            self._finish(sequence)
            return
        sequence.emit(out(text))

    def _finish(self, sequence: _Sequence, *, error: BaseException | None = None) -> None:
        """Hand the slot back (its KV stays, as a prefix cache) and end the request's stream."""
        if self._vision is not None:  # its image encodings nobody else waits for: cancelled, or dropped when done
            self._vision.release(sequence.request_id)
        if self._running.pop(sequence.request_id, None) is not None:
            self._slots.release(sequence.slot, sequence.cache_key, sequence.tokens[: sequence.num_computed])
            self._adapters.release(adapter_id for adapter_id, _ in sequence.loras)
            self._max_running_under_pressure = None
        elif sequence in self._waiting:
            self._waiting.remove(sequence)
        if error is not None:
            sequence.emit(error)
        sequence.emit(_END_OF_STREAM)

    def _make_room(self) -> None:
        """The KV cache is full: drop cached prefixes; failing that, preempt the newest sequence to recompute later."""
        if self._slots.cached:
            for slot in self._slots.drop_cached():
                self._lib.llama_memory_seq_rm(self._memory, slot, -1, -1)
            return
        victim_id = choose_preemption_victim([s.view() for s in self._running.values()])
        if victim_id is None:
            [sequence] = self._running.values()
            self._finish(sequence, error=EngineError("the KV cache cannot hold this sequence; raise --kv-cache-tokens"))
            return
        victim = self._running.pop(victim_id)
        self._lib.llama_memory_seq_rm(self._memory, victim.slot, -1, -1)
        self._slots.release_empty(victim.slot)
        self._adapters.release(adapter_id for adapter_id, _ in victim.loras)
        victim.slot, victim.num_computed = -1, 0
        self._waiting.appendleft(victim)
        self._max_running_under_pressure = len(self._running)
        logger.info("KV cache full: preempted request %d (%d tokens), to be recomputed", victim_id, len(victim.tokens))
