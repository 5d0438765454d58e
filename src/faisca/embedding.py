"""Embedding requests: their inputs as token ids, checked against the model (pure functions, run off the event loop),
and the vectors' size (`dimensions`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from faisca.catalog import ModelCard
from faisca.engine.embeddings import normalized
from faisca.errors import ContextLengthExceeded, InvalidRequest, UnsupportedCapability
from faisca.types import EmbeddingRequest

Tokenize = Callable[[str], list[int]]


def input_tokens(request: EmbeddingRequest, tokenize: Tokenize, *, vocab_size: int, max_tokens: int) -> list[list[int]]:
    """Each input's token ids (texts tokenized as the model wants them for embedding, its BOS/EOS added); token ids
    given are checked against the vocabulary. An empty input is refused; one longer than `max_tokens` is cut to it with
    `truncate`, else refused."""
    single = len(request.inputs) == 1
    inputs: list[list[int]] = []
    for index, item in enumerate(request.inputs):
        param = request.param if single else f"{request.param}.{index}"
        if len(item) == 0:
            raise InvalidRequest(f"{param}: the input is empty; each input needs at least one token.", param=param)
        if isinstance(item, str):
            tokens = tokenize(item)
        else:
            tokens = list(item)
            if (bad := next((token for token in tokens if not 0 <= token < vocab_size), None)) is not None:
                raise InvalidRequest(f"{param}: token {bad} is not in this model's vocabulary of {vocab_size}.",
                                     param=param)
        if len(tokens) > max_tokens:
            if not request.truncate:
                raise ContextLengthExceeded(
                    f"{param}: the input is {len(tokens)} tokens; this model embeds at most {max_tokens} tokens an "
                    f"input. Shorten it, or split it into several inputs.", param=param)
            tokens = tokens[:max_tokens]
        inputs.append(tokens)
    return inputs


def output_dimensions(card: ModelCard, full: int, requested: int | None) -> int:
    """The vectors' size: the model's, or `requested` where the card allows it (a Matryoshka model's sizes)."""
    if requested is None or requested == full:
        return full
    if requested in card.embedding_dimensions and requested < full:
        return requested
    allowed = ", ".join(str(size) for size in sorted({full, *card.embedding_dimensions}, reverse=True) if size <= full)
    raise UnsupportedCapability(f"dimensions: the model `{card.id}` makes vectors of {allowed} dimensions, not "
                                f"{requested}.", param="dimensions")


def shortened(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """The first `dimensions` components of each vector, normalized again (Matryoshka truncation)."""
    return vectors if dimensions == vectors.shape[1] else normalized(vectors[:, :dimensions])
