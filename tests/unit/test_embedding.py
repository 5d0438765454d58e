"""Embedding inputs, batches and vectors; Ollama's `context`; the embedding and token bodies' schemas."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from faisca.api.ollama.convert import from_generate
from faisca.api.openai.embeddings import embedding_response_json, to_embedding_request
from faisca.catalog import Catalog, ModelCard
from faisca.catalog.embedding_schema import (
    BodyValidator, ollama_embed_schema, openai_embeddings_schema, tokenize_schema,
)
from faisca.embedding import input_tokens, output_dimensions, shortened
from faisca.engine.base import EnginePrompt, PromptImage
from faisca.engine.embeddings import EmbeddingJob, normalized, take_batch
from faisca.errors import ContextLengthExceeded, InvalidRequest, UnsupportedCapability
from faisca.limits import MAX_EMBEDDING_INPUTS
from faisca.service import Embeddings, continued
from faisca.types import EmbeddingRequest


def job(*lengths: int) -> EmbeddingJob:
    return EmbeddingJob([[7] * length for length in lengths], reply=lambda _: None)


def test_a_batch_takes_inputs_in_arrival_order_across_requests_while_they_fit() -> None:
    first, second = job(3, 3), job(2, 5)
    taken = take_batch([first, second], max_tokens=8, max_inputs=64)
    assert taken == [(first, 0), (first, 1), (second, 0)]
    first.num_done = 2
    assert take_batch([first, second], max_tokens=8, max_inputs=2) == [(second, 0), (second, 1)]
    long = job(20, 1)
    assert take_batch([long], max_tokens=8, max_inputs=2) == [(long, 0)]  # longer than the budget: alone


def test_vectors_are_normalized_and_shortened_matryoshka_style() -> None:
    vectors = normalized(np.array([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32))
    assert np.allclose(vectors[0], [0.6, 0.8, 0, 0]) and not vectors[1].any()
    short = shortened(np.array([[0.6, 0.0, 0.8, 0.0]], dtype=np.float32), 2)
    assert short.shape == (1, 2) and np.allclose(short, [[1.0, 0.0]])


def test_inputs_are_refused_when_empty_or_too_long_unless_truncated() -> None:
    tokenize = lambda text: [1] * len(text.split())  # noqa: E731
    request = EmbeddingRequest("m", ("one two", (5, 6)))
    assert input_tokens(request, tokenize, vocab_size=10, max_tokens=4) == [[1, 1], [5, 6]]
    with pytest.raises(InvalidRequest, match="input.1: the input is empty") as caught:
        input_tokens(EmbeddingRequest("m", ("a", "")), tokenize, vocab_size=10, max_tokens=4)
    assert caught.value.param == "input.1"
    with pytest.raises(InvalidRequest, match="token 12 is not in this model's vocabulary"):
        input_tokens(EmbeddingRequest("m", ((1, 12),)), tokenize, vocab_size=10, max_tokens=4)
    with pytest.raises(ContextLengthExceeded, match="prompt: the input is 5 tokens; .* at most 4") as long:
        input_tokens(EmbeddingRequest("m", ("a b c d e",), param="prompt"), tokenize, vocab_size=10, max_tokens=4)
    assert long.value.status_code == 400
    cut = EmbeddingRequest("m", ("a b c d e",), truncate=True)
    assert input_tokens(cut, tokenize, vocab_size=10, max_tokens=4) == [[1] * 4]


def test_dimensions_are_the_models_or_a_size_its_card_allows(catalog: Catalog) -> None:
    embedder, gemma = catalog.resolve("embeddinggemma"), catalog.resolve("gemma3:270m")
    assert output_dimensions(embedder, 768, None) == 768 and output_dimensions(embedder, 768, 256) == 256
    assert output_dimensions(gemma, 640, 640) == 640
    with pytest.raises(UnsupportedCapability, match="vectors of 768, 512, 256, 128 dimensions, not 300"):
        output_dimensions(embedder, 768, 300)
    with pytest.raises(UnsupportedCapability, match="vectors of 640 dimensions, not 128"):
        output_dimensions(gemma, 640, 128)


def test_openai_bodies_and_both_encodings() -> None:
    validator = BodyValidator(openai_embeddings_schema())
    for wire, inputs in (("hi", ("hi",)), (["a", "b"], ("a", "b")), ([1, 2], ((1, 2),)), ([[1], [2, 3]], ((1,), (2, 3)))):
        body = {"model": "m", "input": wire}
        validator.validate(body)
        assert to_embedding_request(body).inputs == inputs
    for bad, param in (({"model": "m", "input": []}, "input"), ({"model": "m"}, "input"),
                       ({"model": "m", "input": "x", "encoding_format": "hex"}, "encoding_format"),
                       ({"model": "m", "input": ["x"] * (MAX_EMBEDDING_INPUTS + 1)}, "input")):
        with pytest.raises(InvalidRequest) as caught:
            validator.validate(bad)
        assert caught.value.param == param, caught.value.message
    result = Embeddings(np.array([[0.6, 0.8]], dtype=np.float32), num_tokens=3)
    floats = json.loads(embedding_response_json(result, model="m", encoding_format="float"))
    assert floats["data"][0]["embedding"] == pytest.approx([0.6, 0.8]) and floats["usage"] == {
        "prompt_tokens": 3, "total_tokens": 3}
    packed = json.loads(embedding_response_json(result, model="m", encoding_format="base64"))["data"][0]["embedding"]
    assert np.array_equal(np.frombuffer(base64.b64decode(packed), dtype="<f4"), result.vectors[0])


def test_ollama_embed_and_tokenize_bodies() -> None:
    BodyValidator(ollama_embed_schema()).validate({"model": "m", "input": ["a"], "truncate": False})
    with pytest.raises(InvalidRequest):
        BodyValidator(ollama_embed_schema()).validate({"model": "m", "input": [1]})
    tokenize = BodyValidator(tokenize_schema())
    tokenize.validate({"content": "hi", "with_pieces": True})
    tokenize.validate({"model": "m", "prompt": "hi"})
    with pytest.raises(InvalidRequest):
        tokenize.validate({"model": "m"})


def test_a_context_continues_with_the_new_prompt_without_a_second_bos() -> None:
    image = PromptImage(start=3, num_tokens=2, digest="d", chunk=None)
    prompt = EnginePrompt((2, 10, 11, -5, -5, 12), (image,))
    joined = continued((2, 7, 8), prompt, added_bos=2)
    assert joined.tokens == (2, 7, 8, 10, 11, -5, -5, 12) and joined.images[0].start == 5
    assert continued((1, 7), EnginePrompt((1, 9)), added_bos=None).tokens == (1, 7, 1, 9)  # no BOS added: all kept


def test_ollama_generate_takes_a_context(gemma: ModelCard) -> None:
    assert from_generate({"prompt": "and then?", "context": [2, 5, 6]}, gemma).context == (2, 5, 6)
    assert from_generate({"prompt": "hi"}, gemma).context == ()


@pytest.fixture
def gemma(catalog: Catalog) -> ModelCard:
    return catalog.resolve("gemma3:270m")
