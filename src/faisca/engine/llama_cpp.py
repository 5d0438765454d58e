"""llama.cpp through llama-cpp-python, in process: one context, one engine thread, one request at a time.

Generations run on a single worker thread, in order; the event loop only receives their tokens
(`call_soon_threadsafe`), so it never competes with llama.cpp's own thread pool for the cores.
The batching engine (continuous batching over several sequences) replaces this one later behind
the same `Engine` interface.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from faisca.engine.base import EngineEvent, ModelTokens, PromptAccepted, TokenOut
from faisca.errors import EngineError
from faisca.types import SamplingParams

logger = logging.getLogger("faisca.engine")

_END_OF_STREAM = object()


def available_cores() -> int:
    """The cores this process may run on (its affinity), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _Generation:
    """One generation handed to the engine thread; `emit` sends its events back to the event loop."""

    prompt_tokens: list[int]
    sampling: SamplingParams
    max_new_tokens: int
    is_cancelled: threading.Event
    emit: Callable[[object], None]


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


class LlamaCppEngine:
    def __init__(self, llama: object, *, name: str) -> None:
        import llama_cpp

        self._llama = llama
        self._vocab = llama._model.vocab  # type: ignore[attr-defined]
        self._is_eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{name}")
        model = llama._model  # type: ignore[attr-defined]
        self._tokens = ModelTokens(
            bos_text=model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else "",
            eos_text=model.token_get_text(model.token_eos()) if model.token_eos() >= 0 else "",
        )
        self._add_bos = model.add_bos_token() and model.token_bos() >= 0

    @classmethod
    def load(cls, gguf_path: Path, *, name: str, max_context_tokens: int, num_threads: int) -> LlamaCppEngine:
        """Load the weights (blocking: call it off the event loop)."""
        from llama_cpp import Llama

        started_s = time.monotonic()
        logger.info("loading %s from %s (context %d tokens, %d threads)", name, gguf_path, max_context_tokens, num_threads)
        llama = Llama(
            model_path=str(gguf_path),
            n_ctx=max_context_tokens,
            n_threads=num_threads,
            n_threads_batch=num_threads,
            verbose=False,
        )
        logger.info("loaded %s in %.1f s", name, time.monotonic() - started_s)
        return cls(llama, name=name)

    @property
    def max_context_tokens(self) -> int:
        return int(self._llama.n_ctx())  # type: ignore[attr-defined]

    @property
    def tokens(self) -> ModelTokens:
        return self._tokens

    @property
    def chat_template_source(self) -> str | None:
        return self._llama.metadata.get("tokenizer.chat_template")  # type: ignore[attr-defined]

    def tokenize(self, prompt: str) -> list[int]:
        tokens = self._llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)  # type: ignore[attr-defined]
        bos = self._llama.token_bos()  # type: ignore[attr-defined]
        if self._add_bos and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    async def generate(
        self, prompt_tokens: Sequence[int], sampling: SamplingParams, max_new_tokens: int
    ) -> AsyncIterator[EngineEvent]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[object] = asyncio.Queue()
        is_cancelled = threading.Event()

        def emit(event: object) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        job = loop.run_in_executor(
            self._worker, self._run, _Generation(list(prompt_tokens), sampling, max_new_tokens, is_cancelled, emit)
        )
        try:
            while (event := await events.get()) is not _END_OF_STREAM:
                if isinstance(event, BaseException):
                    raise EngineError(f"generation failed: {event}") from event
                yield event  # type: ignore[misc]
        finally:
            is_cancelled.set()
            # The worker notices within one token; a cancelled caller does not wait for it.
            job.add_done_callback(lambda _: None)

    def _run(self, generation: _Generation) -> None:
        try:
            if not generation.is_cancelled.is_set():
                self._generate_blocking(generation)
        except Exception as exc:  # handed to the caller, raised there as EngineError
            logger.exception("generation failed")
            generation.emit(exc)
        finally:
            generation.emit(_END_OF_STREAM)

    def _generate_blocking(self, generation: _Generation) -> None:
        prompt_tokens, sampling, max_new_tokens = generation.prompt_tokens, generation.sampling, generation.max_new_tokens
        is_cancelled, emit = generation.is_cancelled, generation.emit
        llama = self._llama
        llama.set_seed(sampling.seed if sampling.seed is not None else random.randrange(2**31))  # type: ignore[attr-defined]
        # llama-cpp-python reuses a matching prefix of the last prompt where the KV cache allows; it does not say
        # how much, so nothing is claimed here (the batching engine reports real prefix hits).
        emit(PromptAccepted(num_cached_tokens=0))
        detokenizer = IncrementalDetokenizer(lambda token: llama._model.detokenize([token], special=False))  # type: ignore[attr-defined]
        num_generated = 0
        for token in llama.generate(  # type: ignore[attr-defined]
            prompt_tokens,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
        ):
            if is_cancelled.is_set():
                return
            num_generated += 1
            if self._is_eog(token):
                emit(TokenOut(token, detokenizer.flush(), is_end=True))
                return
            text = detokenizer.decode(token)
            if num_generated >= max_new_tokens:
                emit(TokenOut(token, text + detokenizer.flush()))
                return
            emit(TokenOut(token, text))

    async def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        await asyncio.to_thread(self._llama.close)  # type: ignore[attr-defined]
