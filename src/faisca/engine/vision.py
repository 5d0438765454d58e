"""Images for a llama.cpp model through libmtmd (llama-cpp-python's `mtmd_cpp`): a projector file turns pictures
into embeddings the text model reads in place of tokens.

`prompt_pieces` splits a rendered prompt at its image markers into text tokens and image chunks (the image resized
and normalised here, on the caller's thread). Encoding an image is the expensive part (Gemma 3's vision tower is a
400M-parameter SigLIP at 896 px: 40-50 s on 2 cores), so it runs on an encoder thread of its own, at a lower
priority, asked for by the engine when a sequence reaches the image: the engine's other sequences keep decoding
meanwhile, and an image whose KV cells are already cached is never encoded again. The last few images' embeddings
are kept (a preempted sequence, or a conversation resending its picture, does not pay twice). `feed` decodes
embeddings into a sequence's KV cells, on the engine thread.

An encoding belongs to the sequences waiting for it (`EncodedImages`): when the last of them ends (finished, failed or
aborted: `release`), the encoding is cancelled if it has not started; one under way (libmtmd cannot be interrupted)
finishes, and its result joins the last few kept (a client retrying the same picture finds it), never more.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp

from faisca.engine.base import EnginePrompt, PromptImage
from faisca.engine.native_log import NativeLog
from faisca.errors import EngineError, InvalidRequest, ModelUnavailable
from faisca.images import DecodedImage

_CHUNK_TYPE_TEXT = 0
_MAX_KEPT_EMBEDDINGS = 16  # images; Gemma 3 27B's are 5.5 MB each
_ENCODER_NICENESS = 10  # CPU weight ~1/10 of a normal thread's


def placeholder_token(digest: str) -> int:
    """The (negative) id an image's positions hold in a prompt's token list: equal for equal pixels only."""
    return -1 - int.from_bytes(digest.encode("utf-8")[-16:], "big") % (1 << 62)


class _Chunk:
    """One image chunk, owned here and freed when the last prompt holding it is gone."""

    def __init__(self, pointer: int) -> None:
        self.pointer = pointer
        weakref.finalize(self, mtmd_cpp.mtmd_input_chunk_free, pointer)


def _yield_the_cores() -> None:
    """(Encoder thread, once.) Run below the engine's priority: ggml starts its worker threads for each encoding from
    this thread, and they inherit its niceness, so decoding keeps the cores and the encoder takes what decoding leaves
    (all of them when nothing decodes). Two pools of ggml threads at one priority on the same cores crawl, each
    spinning while the other's threads hold the cores: on 2 cores a text stream fell from 76 to 6 tok/s during an
    encoding at one priority, and to 48 tok/s with the encoder at this one, the image no slower (bench/vision.py)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _ENCODER_NICENESS)
    except (AttributeError, OSError):  # not Linux: the thread's priority is left as it is
        pass


@dataclass
class _Encoding:
    future: Future[np.ndarray]
    waiters: set[int] = field(default_factory=set)  # the sequences (request ids) that want it


class EncodedImages:
    """(Thread-safe.) Image embeddings by digest: encodings in flight, each with the sequences waiting for it, and
    the last `max_kept` results. What nobody waits for is not held past those: an encoding whose last waiter is
    released is cancelled before it starts, or its result, once done, joins the kept ones (the oldest leaves)."""

    def __init__(self, encode: Callable[[PromptImage], np.ndarray], executor: Executor, *, max_kept: int) -> None:
        self._encode = encode
        self._executor = executor
        self._max_kept = max_kept
        self._lock = threading.RLock()  # cancelling a future runs its done callback (which locks) at once
        self._kept: OrderedDict[str, np.ndarray] = OrderedDict()  # digest -> embeddings, least recently used first
        self._encoding: dict[str, _Encoding] = {}

    @property
    def num_encoding(self) -> int:
        return len(self._encoding)

    @property
    def kept_digests(self) -> list[str]:
        with self._lock:
            return list(self._kept)

    def get(self, image: PromptImage, *, owner: int, on_ready: Callable[[], None]) -> np.ndarray | None:
        """The image's embeddings for sequence `owner`, or None while they are computed (asked for here the first
        time; `on_ready` is called from the encoder thread when done). EngineError if encoding failed."""
        digest = image.digest
        with self._lock:
            if (kept := self._kept.get(digest)) is not None:
                self._kept.move_to_end(digest)
                return kept
            encoding = self._encoding.get(digest)
            if encoding is not None:
                encoding.waiters.add(owner)
                if not encoding.future.done():
                    return None
                del self._encoding[digest]
                embeddings = encoding.future.result()  # raises what the encoding raised
                self._keep(digest, embeddings)
                return embeddings
            future = self._executor.submit(self._encode, image)
            self._encoding[digest] = _Encoding(future, {owner})
        future.add_done_callback(lambda done: self._on_done(digest, done, on_ready))
        return None

    def release(self, owner: int) -> None:
        """Sequence `owner` waits for nothing any more (it ended): what only it waited for is cancelled or, when it
        is under way, left to end into the kept results."""
        with self._lock:
            for digest, encoding in list(self._encoding.items()):
                encoding.waiters.discard(owner)
                if not encoding.waiters and (encoding.future.cancel() or encoding.future.done()):
                    self._settle(digest, encoding)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
            self._encoding.clear()

    def _on_done(self, digest: str, future: Future[np.ndarray], on_ready: Callable[[], None]) -> None:
        """(Encoder thread.) An encoding nobody waits for any more settles here; the others, with their waiters."""
        with self._lock:
            encoding = self._encoding.get(digest)
            if encoding is not None and encoding.future is future and not encoding.waiters:
                self._settle(digest, encoding)
        on_ready()

    def _settle(self, digest: str, encoding: _Encoding) -> None:
        if self._encoding.get(digest) is not encoding:  # settled already (by the callback a cancel ran)
            return
        del self._encoding[digest]
        future = encoding.future
        if not future.cancelled() and future.exception() is None:
            self._keep(digest, future.result())

    def _keep(self, digest: str, embeddings: np.ndarray) -> None:
        self._kept[digest] = embeddings
        self._kept.move_to_end(digest)
        while len(self._kept) > self._max_kept:
            self._kept.popitem(last=False)


class VisionEncoder:
    def __init__(self, context: int, *, marker: str, max_batch_tokens: int, embedding_width: int) -> None:
        self._ctx = context
        self.marker = marker
        self._max_batch_tokens = max_batch_tokens  # an image is decoded in one batch: it may take no more
        self._embedding_width = embedding_width
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision-encoder",
                                           initializer=_yield_the_cores)
        self._encoded = EncodedImages(self._encode, self._encoder, max_kept=_MAX_KEPT_EMBEDDINGS)

    @classmethod
    def load(cls, projector_path: Path, model: object, *, num_threads: int, max_batch_tokens: int) -> VisionEncoder:
        """The projector for `model` (llama-cpp-python's LlamaModel); ModelUnavailable if it does not fit it."""
        log = NativeLog.install()
        log.recent_errors = []
        if not projector_path.is_file():
            raise ModelUnavailable(f"The projector {projector_path} is not a file.")
        # A marker no client can type by chance: a request's text never splits into a fake image.
        marker = f"<__faisca_image_{secrets.token_hex(8)}__>"
        params = mtmd_cpp.mtmd_context_params_default()
        params.n_threads = num_threads
        params.print_timings = False
        params.media_marker = marker.encode("utf-8")
        context = mtmd_cpp.mtmd_init_from_file(str(projector_path).encode("utf-8"), model.model, params)  # type: ignore[attr-defined]
        if not context:
            why = "; ".join(log.recent_errors) or "libmtmd refused it"
            raise ModelUnavailable(f"The projector {projector_path} cannot be used with this model: {why}")
        encoder = cls(context, marker=marker, max_batch_tokens=max_batch_tokens,
                      embedding_width=llama_cpp.llama_model_n_embd_inp(model.model))  # type: ignore[attr-defined]
        if not mtmd_cpp.mtmd_support_vision(context):
            encoder.close()
            raise ModelUnavailable(f"The projector {projector_path} has no vision encoder.")
        if mtmd_cpp.mtmd_decode_use_mrope(context):
            encoder.close()
            raise ModelUnavailable(
                f"The projector {projector_path} needs M-RoPE positions (Qwen2-VL style), which faisca's engine does "
                "not support yet."
            )
        return encoder

    def prompt_pieces(self, prompt: str, images: Sequence[DecodedImage], *,
                      tokenize: Callable[[str], list[int]]) -> EnginePrompt:
        """The prompt's text tokens and image chunks (BOS is the caller's business). The text between the markers is
        tokenized by `tokenize`; libmtmd gets each image alone (its marker as the only text), and gives the image's
        chunk with the model's own text around it (`<start_of_image>` … `<end_of_image>`): what libmtmd does for the
        whole prompt at once, as it too tokenizes the text between markers piece by piece."""
        texts = prompt.split(self.marker)
        if len(texts) - 1 != len(images):
            raise InvalidRequest(
                f"the chat template placed {len(texts) - 1} of the {len(images)} images in the prompt; this model's "
                "template reads images in user messages only",
                param="messages",
            )
        tokens = tokenize(texts[0])
        prompt_images: list[PromptImage] = []
        for image, text in zip(images, texts[1:], strict=True):
            self._add_image(image, tokens, prompt_images)
            tokens += tokenize(text)
        if prompt_images and prompt_images[-1].start + prompt_images[-1].num_tokens == len(tokens):
            raise InvalidRequest("a prompt may not end with an image: put text after it", param="messages")
        return EnginePrompt(tuple(tokens), tuple(prompt_images))

    def _add_image(self, image: DecodedImage, tokens: list[int], prompt_images: list[PromptImage]) -> None:
        """Append the image's chunks to `tokens` (its positions hold its placeholder) and its place to `prompt_images`."""
        pixels = (ctypes.c_ubyte * len(image.rgb)).from_buffer_copy(image.rgb)
        bitmap = mtmd_cpp.mtmd_bitmap_init(image.width, image.height, pixels)
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            mtmd_cpp.mtmd_bitmap_set_id(bitmap, image.digest.encode("utf-8"))
            text = self.marker.encode("utf-8")
            text_input = mtmd_cpp.mtmd_input_text(text, len(text), False, True)
            bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
            if (status := mtmd_cpp.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text_input), bitmaps, 1)) != 0:
                raise InvalidRequest(f"the images could not be prepared for this model (libmtmd status {status})",
                                     param="messages")
            for index in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
                chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, index)
                if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == _CHUNK_TYPE_TEXT:
                    count = ctypes.c_size_t()
                    ids = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                    tokens.extend(ids[i] for i in range(count.value))
                    continue
                num_tokens = mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)
                if num_tokens > self._max_batch_tokens:
                    raise InvalidRequest(
                        f"an image takes {num_tokens} tokens here, more than this server's --max-batch-tokens "
                        f"({self._max_batch_tokens}); an image is fed in one step", param="messages",
                    )
                owned = _Chunk(mtmd_cpp.mtmd_input_chunk_copy(chunk))
                prompt_images.append(PromptImage(len(tokens), num_tokens, image.digest, owned))
                tokens.extend([placeholder_token(image.digest)] * num_tokens)
        finally:
            mtmd_cpp.mtmd_bitmap_free(bitmap)
            mtmd_cpp.mtmd_input_chunks_free(chunks)

    def embeddings(self, image: PromptImage, *, owner: int, on_ready: Callable[[], None]) -> np.ndarray | None:
        """(Engine thread.) The image's embeddings for sequence `owner`, or None while the encoder thread computes
        them (asked for here the first time; `on_ready` is called from that thread when they are). EngineError if
        encoding failed."""
        return self._encoded.get(image, owner=owner, on_ready=on_ready)

    def release(self, owner: int) -> None:
        """(Engine thread.) Sequence `owner` ended: its encodings no other sequence waits for are cancelled if not
        started, else their results kept among the last few only."""
        self._encoded.release(owner)

    def _encode(self, image: PromptImage) -> np.ndarray:
        """(Encoder thread.) The image through the projector, copied out of libmtmd's shared output buffer."""
        chunk = image.chunk.pointer  # type: ignore[attr-defined]  # a _Chunk: this module made it
        if (status := mtmd_cpp.mtmd_encode_chunk(self._ctx, chunk)) != 0:
            raise EngineError(f"encoding an image failed (libmtmd status {status})")
        size = image.num_tokens * self._embedding_width
        return np.ctypeslib.as_array(mtmd_cpp.mtmd_get_output_embd(self._ctx), shape=(size,)).copy()

    def feed(self, image: PromptImage, embeddings: np.ndarray, llama_context: int, *, slot: int) -> int:
        """(Engine thread.) Decode the image's embeddings at its positions in sequence `slot`: llama_decode's status
        (0 done, 1 no room in the KV cache: nothing was stored)."""
        next_position = llama_cpp.llama_pos(0)
        return mtmd_cpp.mtmd_helper_decode_image_chunk(
            self._ctx, llama_context, image.chunk.pointer,  # type: ignore[attr-defined]
            embeddings.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), image.start, slot, self._max_batch_tokens,
            ctypes.byref(next_position), mtmd_cpp.mtmd_helper_post_decode_callback(), None,
        )

    def close(self) -> None:
        self._encoder.shutdown(wait=True, cancel_futures=True)  # an encoding under way finishes first
        self._encoded.clear()
        if self._ctx:
            mtmd_cpp.mtmd_free(self._ctx)
            self._ctx = 0
