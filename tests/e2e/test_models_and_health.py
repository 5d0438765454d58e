"""Model listing, cards, published schemas, health and root, on the real server."""

from __future__ import annotations

import httpx
import jsonschema
import openai

from tests.e2e.server import CONTEXT_TOKENS, GEMMA, SMOLLM2

GEMMA_27B = "ista-daslab-gemma-3-27b-it-gptq-4b-128g"
MISTRAL = "casperhansen-mistral-small-24b-instruct-2501-awq"


def test_models_lists_every_card_with_created(client: openai.OpenAI) -> None:
    models = {model.id: model for model in client.models.list()}
    assert set(models) == {GEMMA, SMOLLM2, GEMMA_27B, MISTRAL, "google-embeddinggemma-300m"}
    assert all(model.created > 0 and model.object == "model" for model in models.values())
    assert models[GEMMA].model_extra["max_model_len"] == CONTEXT_TOKENS  # type: ignore[index]


def test_model_card_by_slug_hf_id_and_alias(http: httpx.Client) -> None:
    for name in (GEMMA_27B, "ISTA-DASLab/gemma-3-27b-it-GPTQ-4b-128g", "gemma3:27b"):
        card = http.get(f"/v1/models/{name}").json()
        assert card["id"] == GEMMA_27B
        assert card["hf_id"] == "ISTA-DASLab/gemma-3-27b-it-GPTQ-4b-128g"
        assert (card["name"], card["version"], card["size"]) == ("Gemma3", "27B INT4", "27B parameters")
        assert (card["tool_calling"], card["long_term_support"], card["lora"]) == (False, True, True)
        assert card["context_length"] == 131072 and card["input"] == "text+image"
        assert "23k" in card["notes"] and card["served"] is False
    mistral = http.get(f"/v1/models/{MISTRAL}").json()
    assert (mistral["license"], mistral["tool_calling"], mistral["lora"], mistral["input"]) == ("Apache 2.0", True, False, "text")
    assert mistral["context_length"] == 32768
    assert http.get(f"/v1/models/{GEMMA}").json()["served"] is True
    assert http.get("/v1/models/nope").status_code == 404


def test_published_schemas_follow_the_card(http: httpx.Client) -> None:
    vision = http.get(f"/v1/models/{GEMMA_27B}/schema").json()
    text = http.get("/v1/models/google/gemma-3-270m/schema").json()
    tools = http.get(f"/v1/models/{MISTRAL}/schema").json()
    for schema in (vision, text, tools):
        assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
        jsonschema.Draft7Validator.check_schema(schema)
    assert "ImageContentItem" in vision["components"]["schemas"]
    assert "ImageContentItem" not in text["components"]["schemas"]
    for schema in (vision, text, tools):  # every shipped card calls tools: natively (Mistral) or by ReAct
        assert "tools" in schema["properties"] and "ToolMessage" in schema["components"]["schemas"]
        assert "response_format" in schema["properties"]


def test_health_and_root(http: httpx.Client) -> None:
    health = http.get("/health")
    assert health.status_code == 200
    assert health.json()["models"] == {GEMMA: "ready", SMOLLM2: "ready"}
    root = http.get("/")
    assert root.status_code == 200 and root.text == "faisca is running"
    assert http.head("/").status_code == 200
