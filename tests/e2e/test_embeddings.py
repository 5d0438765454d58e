"""Embeddings, tokens and Ollama's `context` through the real server, with the official `openai` and `ollama`
clients and LangChain's `OllamaEmbeddings`."""

from __future__ import annotations

import httpx
import numpy as np
import ollama
import openai
import pytest

from tests.e2e.server import CONTEXT_TOKENS, GEMMA, SMOLLM2, RunningServer

pytestmark = pytest.mark.e2e

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "def add(a, b): return a + b",
         "Quarterly revenue grew by 12 percent.", "A bird in the hand is worth two in the bush.", "Hi", "Ölçü ve ünlü",
         "The cat sat on the mat."]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def ollama_client(server: RunningServer) -> ollama.Client:
    return ollama.Client(host=server.base_url, timeout=120)


def test_openai_embeddings_shapes_norms_and_the_same_vector_alone_and_batched(client: openai.OpenAI) -> None:
    batched = client.embeddings.create(model="gemma3:270m", input=TEXTS)  # the client asks for base64
    assert batched.object == "list" and batched.model == "gemma3:270m" and len(batched.data) == len(TEXTS)
    vectors = np.array([item.embedding for item in batched.data])
    assert [item.index for item in batched.data] == list(range(len(TEXTS))) and vectors.shape == (len(TEXTS), 640)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert batched.usage.prompt_tokens == batched.usage.total_tokens > len(TEXTS)
    # the same text twice in one batch: llama.cpp's pooling (a matmul over the batch's rows) rounds by where a text's
    # rows lie, so equal to a few ulps, not bit for bit
    assert cosine(vectors[0], vectors[-1]) > 0.9999 and np.allclose(vectors[0], vectors[-1], atol=1e-6)
    assert cosine(vectors[0], vectors[1]) < 0.999  # and different texts differ
    for index in (1, 6):  # alone, in floats this time
        alone = client.embeddings.create(model="gemma3:270m", input=TEXTS[index], encoding_format="float")
        assert len(alone.data) == 1
        assert cosine(np.array(alone.data[0].embedding), vectors[index]) > 0.9999
    tokens = client.embeddings.create(model=GEMMA, input=[[2, 818, 5866], [2, 818]])
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 5


def test_openai_refusals(client: openai.OpenAI, http: httpx.Client) -> None:
    for bad in ("", ["a", ""], []):
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="gemma3:270m", input=bad)
    long_text = "word " * (CONTEXT_TOKENS + 100)
    with pytest.raises(openai.BadRequestError, match="at most 2048 tokens an input"):
        client.embeddings.create(model="gemma3:270m", input=["short", long_text])
    with pytest.raises(openai.BadRequestError, match="not 64"):
        client.embeddings.create(model="gemma3:270m", input="x", dimensions=64)
    with pytest.raises(openai.BadRequestError, match="vocabulary"):
        client.embeddings.create(model="gemma3:270m", input=[[10**9]])
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    response = http.post("/v1/embeddings", json={"model": "smollm2", "input": ["x"] * 2049})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    assert "at most 2048" in response.json()["error"]["message"]


def test_ollama_embed_and_embeddings(ollama_client: ollama.Client) -> None:
    batched = ollama_client.embed(model="smollm2", input=TEXTS)
    vectors = np.array(batched.embeddings)
    assert vectors.shape == (len(TEXTS), 576) and batched.prompt_eval_count > len(TEXTS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    alone = np.array(ollama_client.embed(model="smollm2:135m", input=TEXTS[2]).embeddings[0])
    assert cosine(alone, vectors[2]) > 0.9999
    legacy = np.array(ollama_client.embeddings(model="smollm2", prompt=TEXTS[2]).embedding)
    assert cosine(legacy, vectors[2]) > 0.9999
    long_text = "word " * (CONTEXT_TOKENS + 100)
    assert len(ollama_client.embed(model="smollm2", input=long_text).embeddings[0]) == 576  # cut to fit, as Ollama
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.embed(model="smollm2", input=long_text, truncate=False)
    assert caught.value.status_code == 400
    for bad in ("", [""]):
        with pytest.raises(ollama.ResponseError) as caught:
            ollama_client.embed(model="smollm2", input=bad)
        assert caught.value.status_code == 400 and "empty" in caught.value.error


def test_langchain_ollama_embeddings(server: RunningServer) -> None:
    langchain_ollama = pytest.importorskip("langchain_ollama")
    embeddings = langchain_ollama.OllamaEmbeddings(model="gemma3:270m", base_url=server.base_url)
    documents = embeddings.embed_documents(TEXTS[:3])
    query = embeddings.embed_query(TEXTS[1])
    assert len(documents) == 3 and len(query) == 640
    assert cosine(np.array(query), np.array(documents[1])) > 0.9999


def test_tokenize_and_detokenize_in_llama_servers_and_vllms_shapes(http: httpx.Client) -> None:
    llama = http.post("/tokenize", json={"model": "gemma3:270m", "content": "Hello world", "with_pieces": True})
    assert llama.status_code == 200
    pieces = llama.json()["tokens"]
    assert "".join(piece["piece"] for piece in pieces) == "Hello world"
    vllm = http.post("/tokenize", json={"model": GEMMA, "prompt": "Hello world"}).json()
    assert vllm["tokens"] == [2, *(piece["id"] for piece in pieces)]  # vLLM adds special tokens by default: BOS
    assert vllm["count"] == len(vllm["tokens"]) and vllm["max_model_len"] == CONTEXT_TOKENS
    back = http.post("/detokenize", json={"model": GEMMA, "tokens": vllm["tokens"][1:]}).json()
    assert back == {"content": "Hello world", "prompt": "Hello world"}
    assert http.post("/tokenize", json={"content": "hi"}).status_code == 400  # two models served: name one
    bad = http.post("/detokenize", json={"model": SMOLLM2, "tokens": [10**8]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


def test_ollama_generate_returns_a_context_and_continues_from_it(ollama_client: ollama.Client) -> None:
    options = {"num_predict": 8, "temperature": 0}
    first = ollama_client.generate(model="smollm2", prompt="My name is Ana. Say hello.", options=options)
    assert first.context and all(isinstance(token, int) for token in first.context)
    assert first.prompt_eval_count <= len(first.context) <= first.prompt_eval_count + first.eval_count
    second = ollama_client.generate(model="smollm2", prompt="What is my name?", options=options,
                                    context=first.context)
    assert second.prompt_eval_count > len(first.context)
    assert second.context[: len(first.context)] == first.context
    streamed = list(ollama_client.generate(model="smollm2", prompt="Again?", options=options, context=second.context,
                                           stream=True))
    assert streamed[-1].done and streamed[-1].context[: len(second.context)] == second.context
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.generate(model="smollm2", prompt="x", context=[10**8])
    assert caught.value.status_code == 400
