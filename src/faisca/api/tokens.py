"""`POST /tokenize` and `POST /detokenize`, in llama-server's shape and vLLM's (which Open WebUI and token counters
use). A body names its model with `model` (vLLM's); without one (llama-server's), the only model served here.

/tokenize: llama-server's body has `content` (`add_special`, default false; `parse_special`, default true;
`with_pieces`) and gets `{"tokens": [...]}` (with pieces: `[{"id", "piece"}]`); vLLM's has `prompt`
(`add_special_tokens`, default true; `return_token_strs`) and gets `{"count", "max_model_len", "tokens",
"token_strs"}`. /detokenize takes `tokens` and answers both shapes at once: `{"content": …, "prompt": …}`.
Errors have OpenAI's shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from faisca.api.body import read_request
from faisca.api.openapi import request_body
from faisca.catalog.embedding_schema import BodyValidator, detokenize_schema, tokenize_schema
from faisca.config import Settings
from faisca.errors import InvalidRequest
from faisca.service import ChatService


def build_router(service: ChatService, settings: Settings) -> APIRouter:
    router = APIRouter()
    tokenize_validator, detokenize_validator = BodyValidator(tokenize_schema()), BodyValidator(detokenize_schema())

    def checked(validator: BodyValidator) -> Any:
        def parse(body: dict[str, Any]) -> dict[str, Any]:
            validator.validate(body)
            return body
        return parse

    @router.post("/tokenize", openapi_extra=request_body(tokenize_schema(), model_ids=None))
    async def tokenize(request: Request) -> dict[str, Any]:
        body = await read_request(request, max_bytes=settings.max_body_bytes, parse=checked(tokenize_validator))
        if "content" in body:  # llama-server's
            add_special, parse_special = body.get("add_special") is True, body.get("parse_special") is not False
            text = body["content"]
        else:  # vLLM's: a Hugging Face tokenizer reads special tokens in the text
            add_special, parse_special = body.get("add_special_tokens") is not False, True
            text = body["prompt"]
        with_pieces = body.get("with_pieces") is True or body.get("return_token_strs") is True

        def work() -> tuple[list[int], list[str] | None]:
            tokens = engine.tokenize(text, add_special=add_special, parse_special=parse_special)
            return tokens, [engine.token_piece(token) for token in tokens] if with_pieces else None

        async with service.local_model(body.get("model")) as served:
            engine = served.engine
            tokens, pieces = await service.in_worker(work)
        if "content" in body:
            if pieces is None:
                return {"tokens": tokens}
            return {"tokens": [{"id": token, "piece": piece} for token, piece in zip(tokens, pieces, strict=True)]}
        return {"count": len(tokens), "max_model_len": engine.max_context_tokens, "tokens": tokens,
                "token_strs": pieces}

    @router.post("/detokenize", openapi_extra=request_body(detokenize_schema(), model_ids=None))
    async def detokenize(request: Request) -> dict[str, str]:
        body = await read_request(request, max_bytes=settings.max_body_bytes, parse=checked(detokenize_validator))
        tokens = [int(token) for token in body["tokens"]]  # the schema's integers: 2.0 is one to JSON Schema

        def work() -> str:
            if (bad := next((token for token in tokens if token >= engine.vocab_size), None)) is not None:
                raise InvalidRequest(f"tokens: token {bad} is not in this model's vocabulary of {engine.vocab_size}.",
                                     param="tokens")
            return engine.detokenize(tokens)

        async with service.local_model(body.get("model")) as served:
            engine = served.engine
            text = await service.in_worker(work)
        return {"content": text, "prompt": text}

    return router
