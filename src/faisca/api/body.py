"""Reading a JSON request body: bounded in size, strictly UTF-8, clear 400/413 errors."""

from __future__ import annotations

import json

from starlette.requests import Request

from faisca.errors import InvalidRequest, PayloadTooLarge


async def read_json_object(request: Request, *, max_bytes: int) -> dict[str, object]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is {declared} bytes; the limit is {max_bytes} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"The request body is over the limit of {max_bytes} bytes.")
    try:
        parsed = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid UTF-8 ({exc.reason} at byte {exc.start}).") from exc
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from exc
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"The request body must be a JSON object, not {type(parsed).__name__}.")
    return parsed
