"""Embeddings: a second llama.cpp context on the generation engine's loaded weights (`llama_init_from_model` shares
them), with `embeddings = True` and a pooling type, driven by the engine thread between generation steps.

One `llama_decode` embeds several inputs (one seq_id each; `llama_get_embeddings_seq` reads each one's pooled vector),
taken first come first served across the requests waiting (`take_batch`); its KV cells are cleared after each batch.
The pooling is the model's own (`<arch>.pooling_type` in its GGUF: mean, CLS, last...), else mean; vectors are
L2-normalized here. The context is made when the first embedding request comes, so a server that never embeds pays
nothing for it.

Cost on a causal LM: llama.cpp outputs every token of an embedding batch, and its graph still ends in the LM head, so
each token costs its logits too (for Gemma 3's 262k vocabulary, about as much as the rest of the model), and the
compute buffer grows by tokens × vocabulary × 4 bytes. Hence the bound on one input's tokens
(`faisca.limits.MAX_EMBEDDING_INPUT_TOKENS`), which is also the most one embedding decode holds the engine thread
with a single input. Encoder models (EmbeddingGemma, BERT) have no LM head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from faisca.engine.batch_invariance import make_batch_invariant
from faisca.errors import EngineError

logger = logging.getLogger("faisca.engine")

# GGUF `<arch>.pooling_type` (llama.cpp's `llama_pooling_type`) → name, for the log
POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


@dataclass(eq=False)
class EmbeddingJob:
    """One request's inputs (token ids each), embedded a batch at a time on the engine thread; `reply` is called there
    once, with the (inputs × dimensions) float32 array of unit vectors or with the exception that ended it."""

    inputs: Sequence[Sequence[int]]
    reply: Callable[[object], None]
    vectors: np.ndarray | None = None
    num_done: int = 0
    is_cancelled: bool = False  # its request went away: the inputs not yet embedded are dropped
    _answered: bool = field(default=False, repr=False)

    def answer(self, result: object) -> None:
        if not self._answered:
            self._answered = True
            self.reply(result)


def take_batch(jobs: Sequence[EmbeddingJob], *, max_tokens: int, max_inputs: int) -> list[tuple[EmbeddingJob, int]]:
    """The (job, input index) pairs one decode embeds: the waiting inputs in arrival order, while their tokens fit in
    `max_tokens` and they number at most `max_inputs`; always at least one (an input longer than `max_tokens` goes
    alone: the caller bounds inputs by the context)."""
    taken: list[tuple[EmbeddingJob, int]] = []
    num_tokens = 0
    for job in jobs:
        for index in range(job.num_done, len(job.inputs)):
            length = len(job.inputs[index])
            if taken and (num_tokens + length > max_tokens or len(taken) == max_inputs):
                return taken
            taken.append((job, index))
            num_tokens += length
    return taken


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (a zero row stays zero)."""
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def pooling_for(metadata: dict[str, str]) -> int:
    """The model's own pooling type from its GGUF, when it names one other than none; else mean."""
    import llama_cpp

    declared = metadata.get(f"{metadata.get('general.architecture', '')}.pooling_type", "")
    if declared.isdigit() and int(declared) not in (llama_cpp.LLAMA_POOLING_TYPE_NONE, llama_cpp.LLAMA_POOLING_TYPE_RANK):
        return int(declared)
    return llama_cpp.LLAMA_POOLING_TYPE_MEAN


class Embedder:
    """The embedding context of one loaded model. Engine thread only."""

    def __init__(self, model: object, *, pooling: int, max_tokens: int, max_inputs: int, num_threads: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.max_tokens = max_tokens
        self.max_inputs = max_inputs
        self.dimensions = llama_cpp.llama_model_n_embd(model.model)  # type: ignore[attr-defined]
        params = llama_cpp.llama_context_default_params()
        make_batch_invariant(llama_cpp.llama_model_default_params(), params)  # the context's half: as the engine's
        params.embeddings = True
        params.pooling_type = pooling
        # a whole input in one micro-batch (pooling is per micro-batch), its cells shared by the inputs of a batch
        params.n_ctx = params.n_batch = params.n_ubatch = max_tokens
        params.n_seq_max = max_inputs
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = num_threads
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(model.model, params)  # type: ignore[attr-defined]
        if not self._ctx:  # a Q8_0 V cache needs a head size that is a multiple of 32
            params.type_v = llama_cpp.GGML_TYPE_F16
            self._ctx = llama_cpp.llama_init_from_model(model.model, params)  # type: ignore[attr-defined]
        if not self._ctx:
            raise EngineError("llama.cpp could not make an embedding context for this model")
        self._batch = llama_cpp.llama_batch_init(max_tokens, 0, 1)
        logger.info("embedding context: %s pooling, %d dimensions, %d tokens an input, %d inputs a batch",
                    POOLING_NAMES.get(pooling, pooling), self.dimensions, max_tokens, max_inputs)

    def embed(self, inputs: Sequence[Sequence[int]]) -> np.ndarray:
        """One llama_decode: each input's pooled, normalized vector (inputs × dimensions, float32)."""
        lib, batch = self._lib, self._batch
        num_tokens = 0
        for seq_id, tokens in enumerate(inputs):
            for position, token in enumerate(tokens):
                batch.token[num_tokens] = token
                batch.pos[num_tokens] = position
                batch.n_seq_id[num_tokens] = 1
                batch.seq_id[num_tokens][0] = seq_id
                batch.logits[num_tokens] = True
                num_tokens += 1
        batch.n_tokens = num_tokens
        try:
            status = lib.llama_decode(self._ctx, batch)
            if status != 0:
                raise EngineError(f"embedding decode failed with status {status}")
            vectors = np.empty((len(inputs), self.dimensions), dtype=np.float32)
            for seq_id in range(len(inputs)):
                pointer = lib.llama_get_embeddings_seq(self._ctx, seq_id)
                if not pointer:
                    raise EngineError("llama.cpp returned no pooled embedding")
                vectors[seq_id] = np.ctypeslib.as_array(pointer, shape=(self.dimensions,))
        finally:
            if memory := lib.llama_get_memory(self._ctx):  # encoder models keep none
                lib.llama_memory_clear(memory, True)
        return normalized(vectors)

    def close(self) -> None:
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)
