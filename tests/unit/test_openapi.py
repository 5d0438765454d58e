"""The OpenAPI document declares each POST route's JSON body, with a schema covering every served model."""

from __future__ import annotations

import warnings
from typing import Any

from jsonschema import Draft202012Validator

from faisca.api.app import create_app
from faisca.catalog import Catalog
from faisca.config import Settings
from faisca.registry import ModelRegistry

SMOLLM2 = "huggingfacetb-smollm2-135m-instruct"
VISION = "ista-daslab-gemma-3-27b-it-gptq-4b-128g"


def document(catalog: Catalog, model_ids: list[str]) -> dict[str, Any]:
    registry = ModelRegistry(catalog, model_ids, lambda card: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FastAPI warns of `GET|HEAD /` sharing an operation id
        return create_app(Settings(model_ids=tuple(model_ids)), registry).openapi()


def body_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    body = doc["paths"][path]["post"]["requestBody"]
    assert body["required"]
    return body["content"]["application/json"]["schema"]


def test_post_routes_declare_their_bodies(catalog: Catalog) -> None:
    doc = document(catalog, [SMOLLM2])
    posts = [path for path, operation in doc["paths"].items() if "post" in operation]
    assert set(posts) == {"/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate", "/api/show",
                          "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/embeddings", "/api/embed",
                          "/api/embeddings", "/tokenize", "/detokenize"}
    for path in posts:
        schema = body_schema(doc, path)
        Draft202012Validator.check_schema(schema)
        assert "$ref" not in str(schema)  # inlined: it stands alone in the document
    chat = body_schema(doc, "/v1/chat/completions")
    # every servable model: the one named at start first, then the other with weights here (loaded on demand)
    assert chat["properties"]["model"]["enum"] == [SMOLLM2, "google-gemma-3-270m"] and "model" in chat["required"]
    valid = {"model": SMOLLM2, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    assert not list(Draft202012Validator(chat).iter_errors(valid))
    assert "options" in body_schema(doc, "/api/chat")["properties"]
    for path in ("/v1/chat/completions", "/v1/completions"):  # vLLM's, on both
        assert "grammar" in body_schema(doc, path)["properties"]["structured_outputs"]["properties"]


def test_the_documents_schema_is_the_union_of_the_served_cards(catalog: Catalog) -> None:
    text_only = str(body_schema(document(catalog, [SMOLLM2]), "/v1/chat/completions"))
    both = str(body_schema(document(catalog, [SMOLLM2, VISION]), "/v1/chat/completions"))
    assert "image_url" not in text_only and "image_url" in both
    assert "images" in body_schema(document(catalog, [SMOLLM2, VISION]), "/api/generate")["properties"]
