"""LoRA adapters while serving: llama-server's `GET /lora-adapters` (ids for a request's `"lora": [{"id", "scale"}]`)
and vLLM's `POST /v1/load_lora_adapter` / `POST /v1/unload_lora_adapter`.

Loading reads a file the client names, so it is off unless the server was given `--lora-dir DIR`: the path must then
resolve (symbolic links followed) to a file inside one of those directories. Like every route but `/health` and
`GET /`, these need the API key when one is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from jsonschema import Draft7Validator

from faisca.api.body import read_json_object
from faisca.api.openapi import request_body
from faisca.config import Settings
from faisca.errors import InvalidRequest, ModelNotFound, UnsupportedCapability
from faisca.registry import ServedModel
from faisca.service import ChatService

_NAME = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "\\S"}
# vLLM's bodies; `model` (faisca's) names the base when several models are served
LOAD_SCHEMA = {"type": "object", "required": ["lora_name", "lora_path"], "properties": {
    "lora_name": _NAME, "lora_path": {"type": "string", "minLength": 1, "maxLength": 4096}, "model": _NAME}}
UNLOAD_SCHEMA = {"type": "object", "required": ["lora_name"], "properties": {
    "lora_name": _NAME, "lora_int_id": {"type": "integer"}}}


async def _read(request: Request, schema: dict[str, Any]) -> dict[str, Any]:
    body = await read_json_object(request, max_bytes=64 * 1024)
    for error in Draft7Validator(schema).iter_errors(body):
        param = ".".join(str(part) for part in error.absolute_path) or None
        raise InvalidRequest(f"{param or 'body'}: {error.message}", param=param)
    return body


def checked_adapter_path(raw: str, allowed_dirs: tuple[Path, ...]) -> Path:
    """The adapter file a client named, if it lies inside an allowed directory; InvalidRequest otherwise."""
    if not allowed_dirs:
        raise InvalidRequest("lora_path: loading adapters while serving is off; start the server with --lora-dir DIR "
                             "to allow the adapters in DIR", param="lora_path")
    try:
        path = Path(raw).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidRequest(f"lora_path: {raw} does not exist", param="lora_path") from None
    if not any(path.is_relative_to(directory.expanduser().resolve()) for directory in allowed_dirs):
        raise InvalidRequest("lora_path: the file is not inside a --lora-dir", param="lora_path")
    if not path.is_file():
        raise InvalidRequest(f"lora_path: {raw} is not a file", param="lora_path")
    return path


def build_router(service: ChatService, settings: Settings) -> APIRouter:
    router = APIRouter()

    def base_model(name: str | None) -> ServedModel:
        """The model an adapter is for: the one named, else the only served model that runs here."""
        local = [served for served in service.registry.ready_models() if isinstance(served, ServedModel)]
        if name is not None:
            card = service.catalog.resolve(name)
            served = next((served for served in local if served.card.id == card.id), None)
            if served is None:
                raise InvalidRequest(f"model: `{card.id}` is not served here by llama.cpp", param="model")
        elif len(local) == 1:
            served = local[0]
        else:
            raise InvalidRequest("model: several models are served; name the adapter's base model", param="model")
        if not served.card.lora:
            raise UnsupportedCapability(f"The model `{served.card.id}` takes no LoRA adapters (its card says LoRA ❌).",
                                        param="model")
        return served

    @router.get("/lora-adapters")
    async def lora_adapters(model: str | None = None) -> list[dict[str, Any]]:
        """llama-server's list: `id` is what a request's `lora` names; `scale` is 0 here, since a request without
        `lora` (and without an adapter as its `model`) runs on the base alone."""
        served = [base_model(model)] if model is not None else [
            served for served in service.registry.ready_models() if isinstance(served, ServedModel)]
        return [{"id": info.id, "name": info.name, "path": str(info.path), "scale": 0.0, "model": entry.card.id}
                for entry in served for info in entry.engine.lora_adapters]

    @router.post("/v1/load_lora_adapter", openapi_extra=request_body(LOAD_SCHEMA, model_ids=None))
    async def load_lora_adapter(request: Request) -> PlainTextResponse:
        body = await _read(request, LOAD_SCHEMA)
        name = body["lora_name"]
        try:
            service.resolve_model(name)
        except ModelNotFound:
            pass
        else:
            raise InvalidRequest(f"lora_name: `{name}` already names a model or an adapter", param="lora_name")
        path = checked_adapter_path(body["lora_path"], settings.lora_dirs)
        served = base_model(body.get("model"))
        await served.engine.load_lora(name, path)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @router.post("/v1/unload_lora_adapter", openapi_extra=request_body(UNLOAD_SCHEMA, model_ids=None))
    async def unload_lora_adapter(request: Request) -> PlainTextResponse:
        body = await _read(request, UNLOAD_SCHEMA)
        name = body["lora_name"]
        found = service.registry.adapter(name)
        if found is None:
            raise ModelNotFound(f"The LoRA adapter `{name}` cannot be found.", param="lora_name")
        await found[0].engine.unload_lora(name)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    return router
