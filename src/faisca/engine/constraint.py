"""Constrained decoding with llguidance, fed the model's own vocabulary.

A grammar (llguidance's Lark dialect, where `%json {schema}` embeds a JSON Schema; `faisca.chat.structured` writes
it) is compiled per request into a `TokenConstraint`; at every step the engine asks it for the allowed tokens, masks
the logits row (disallowed → -inf, branch-free in numpy) and tells it the token it sampled. llama.cpp's own GBNF sampler
is not used: over Gemma 3's 262k vocabulary it costs more than the decode itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_NEG_INF_BITS = np.int32(-8388608)  # 0xFF800000: the bits of float32 -inf


class ConstraintCompiler:
    """Compiles grammars against one model's vocabulary. Build once per engine (about 2 s for 262k tokens)."""

    def __init__(self, vocab: object, *, num_vocab: int, end_tokens: Sequence[int]) -> None:
        import llguidance.llamacpp

        self._num_vocab = num_vocab
        self._tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(vocab, n_vocab=num_vocab, eos_token=list(end_tokens))

    def compile(self, grammar: str, *, param: str | None = None) -> TokenConstraint:
        import llguidance

        matcher = llguidance.LLMatcher(self._tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=1)
        if matcher.is_error():
            raise InvalidRequest(f"cannot constrain the output: {matcher.get_error()}", param=param)
        return TokenConstraint(matcher, self._num_vocab)


class TokenConstraint:
    """One generation's grammar state. Used by the engine thread only."""

    def __init__(self, matcher: object, num_vocab: int) -> None:
        import llguidance.numpy

        self._matcher = matcher
        self._num_vocab = num_vocab
        self._bitmask = llguidance.numpy.allocate_token_bitmask(1, num_vocab)
        self._fill = llguidance.numpy.fill_next_token_bitmask

    def masked(self, logits: np.ndarray) -> np.ndarray:
        """A copy of `logits` where tokens the grammar forbids next are -inf."""
        self._fill(self._matcher, self._bitmask)  # releases the GIL
        allowed = np.unpackbits(self._bitmask[0].view(np.uint8), bitorder="little")[: self._num_vocab].astype(np.int32)
        allowed -= 1  # 0 where allowed, -1 (all bits) where not
        allowed &= _NEG_INF_BITS  # +0.0 where allowed, -inf where not
        return logits + allowed.view(np.float32)

    def accept(self, token: int) -> bool:
        """Record the sampled token; True when the grammar is complete (nothing may follow)."""
        if not self._matcher.consume_token(token):  # type: ignore[attr-defined]
            raise RuntimeError(f"the grammar rejected token {token}: {self._matcher.get_error()}")  # type: ignore[attr-defined]
        return bool(self._matcher.is_stopped())  # type: ignore[attr-defined]

    @property
    def is_accepting(self) -> bool:
        return bool(self._matcher.is_accepting())  # type: ignore[attr-defined]
