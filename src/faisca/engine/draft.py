"""A draft model for speculative decoding (`--draft MODEL`, `--draft-gguf FILE`): a small model of the same
vocabulary proposes the next tokens greedily; the target verifies them as it verifies prompt-lookup drafts
(`speculative.verify`), so the text is the target's whatever the draft says.

The draft has a llama.cpp context of its own, with the target's sequence slots: slot s of the draft holds the draft's
KV for the tokens of the sequence in the target's slot s (`held`), so each proposal only feeds what changed since the
last one (the tokens the target added, after dropping the rejected drafts), and a new sequence on a slot starts from
the prefix it shares with the last one there. Its numbers need not be batch invariant: they change which tokens are
proposed, never which are kept. Used by the engine thread only.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from faisca.engine.kv_cache import common_prefix_len
from faisca.engine.native_log import NativeLog
from faisca.errors import EngineError, FaiscaError


def vocabulary_mismatch(target: Path, draft: Path) -> str | None:
    """Why `draft` cannot propose tokens for `target` (sizes, special tokens, or the first token whose text differs);
    None when they share their vocabulary. Reads the vocabularies only, not the weights."""
    import llama_cpp
    from llama_cpp import _internals

    NativeLog.install()
    models = []
    try:
        for path in (target, draft):
            params = llama_cpp.llama_model_default_params()
            params.vocab_only = True
            try:
                models.append(_internals.LlamaModel(path_model=str(path), params=params, verbose=False))
            except ValueError:
                return f"{path} is not a GGUF model llama.cpp can load"
        big, small = models
        if big.n_vocab() != small.n_vocab():
            return f"{big.n_vocab()} tokens against the draft's {small.n_vocab()}"
        if (big.token_bos(), big.token_eos()) != (small.token_bos(), small.token_eos()):
            return "their BOS/EOS tokens differ"
        for token in range(big.n_vocab()):
            if big.token_get_text(token) != small.token_get_text(token):
                return f"token {token} is {big.token_get_text(token)!r} against the draft's {small.token_get_text(token)!r}"
        return None
    finally:
        for model in models:
            model.close()


def check_draft(target: Path, draft: Path) -> None:
    if (why := vocabulary_mismatch(target, draft)) is not None:
        raise FaiscaError(f"the draft model {draft} does not share the vocabulary of {target}: {why}")


class DraftModel:
    def __init__(self, model: object, context: object, *, max_batch_tokens: int, num_slots: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._model = model
        self._context = context
        self._ctx = context.ctx  # type: ignore[attr-defined]
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._num_vocab = model.n_vocab()  # type: ignore[attr-defined]
        self._max_batch_tokens = max_batch_tokens
        self._batch = llama_cpp.llama_batch_init(max_batch_tokens, 0, 1)
        self._held: list[list[int]] = [[] for _ in range(num_slots)]  # per slot: the tokens whose KV it holds
        self._keys: list[object] = [None] * num_slots  # per slot: the cache key those tokens were fed under
        self.num_seconds = 0.0  # spent proposing, since it was loaded

    @classmethod
    def load(cls, gguf_path: Path, *, kv_cache_tokens: int, max_num_seqs: int, max_batch_tokens: int,
             num_threads: int) -> DraftModel:
        import llama_cpp
        from llama_cpp import _internals

        NativeLog.install()
        model_params, params = llama_cpp.llama_model_default_params(), llama_cpp.llama_context_default_params()
        model_params.use_extra_bufts = False  # as the target's (README "How it runs": AMX crashes here)
        model = _internals.LlamaModel(path_model=str(gguf_path), params=model_params, verbose=False)
        params.n_ctx = kv_cache_tokens
        params.n_batch = params.n_ubatch = max_batch_tokens
        params.n_seq_max = max_num_seqs
        params.n_threads = params.n_threads_batch = num_threads
        params.kv_unified = True
        params.swa_full = True  # so a slot's KV can be cut back to any prefix
        params.no_perf = True
        context = _internals.LlamaContext(model=model, params=params, verbose=False)
        return cls(model, context, max_batch_tokens=max_batch_tokens, num_slots=max_num_seqs)

    def propose(self, slot: int, tokens: list[int], max_tokens: int, *, key: object = None) -> list[int]:
        """Up to `max_tokens` greedy next tokens after `tokens` (text: no image placeholders). A prefix is
        reused only under the same `key` (the sequence's cache key: one tenant's prompts never speed up another's)."""
        started = time.perf_counter()
        if key != self._keys[slot]:
            self._held[slot].clear()
            self._keys[slot] = key
        try:
            return self._propose(slot, tokens, max_tokens)
        finally:
            self.num_seconds += time.perf_counter() - started

    def _propose(self, slot: int, tokens: list[int], max_tokens: int) -> list[int]:
        lib = self._lib
        held = self._held[slot]
        keep = min(common_prefix_len(held, tokens), len(tokens) - 1)  # the last token is fed, for its logits
        if not lib.llama_memory_seq_rm(self._memory, slot, keep, -1):
            lib.llama_memory_seq_rm(self._memory, slot, -1, -1)
            keep = 0
        del held[keep:]
        pending = tokens[keep:]
        drafts: list[int] = []
        while len(drafts) < max_tokens:
            for start in range(0, len(pending), self._max_batch_tokens):
                chunk = pending[start: start + self._max_batch_tokens]
                if not self._decode(slot, chunk, len(held)):
                    return drafts  # no room in the draft's cache: no proposal this time
                held.extend(chunk)
            logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, -1), shape=(self._num_vocab,))
            drafts.append(int(np.argmax(logits)))
            pending = drafts[-1:]
        return drafts

    def _decode(self, slot: int, tokens: list[int], start: int) -> bool:
        batch = self._batch
        for row, token in enumerate(tokens):
            batch.token[row] = token
            batch.pos[row] = start + row
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = slot
            batch.logits[row] = row == len(tokens) - 1
        batch.n_tokens = len(tokens)
        status = self._lib.llama_decode(self._ctx, batch)
        if status == 1:  # full: forget every slot's draft KV, start over next time
            self._lib.llama_memory_clear(self._memory, True)
            for held in self._held:
                held.clear()
            return False
        if status != 0:
            raise EngineError(f"the draft model's llama_decode failed with status {status}")
        return True

    def close(self) -> None:
        self._lib.llama_batch_free(self._batch)
        self._context.close()  # type: ignore[attr-defined]
        self._model.close()  # type: ignore[attr-defined]
