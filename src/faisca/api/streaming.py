"""Framing for streamed answers (SSE), with in-band errors after the first byte, and disconnect handling."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request

from faisca.errors import FaiscaError

logger = logging.getLogger("faisca.api")

T = TypeVar("T")

_DISCONNECT_POLL_S = 0.25


def as_faisca_error(exc: Exception) -> FaiscaError:
    if isinstance(exc, FaiscaError):
        return exc
    logger.exception("error while streaming", exc_info=exc)
    return FaiscaError("The server had an error while processing your request.")


async def sse_frames(
    payloads: AsyncIterator[str], *, error_payload: Callable[[FaiscaError], str]
) -> AsyncIterator[str]:
    """`data: …` frames, then `data: [DONE]`; an error after the start is one in-band `data:` event, then [DONE]."""
    try:
        async for payload in payloads:
            yield f"data: {payload}\n\n"
    except Exception as exc:  # the status line is gone: report in band
        yield f"data: {error_payload(as_faisca_error(exc))}\n\n"
    yield "data: [DONE]\n\n"


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so its generation) if the client goes away first."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise asyncio.CancelledError("client disconnected")
    finally:
        if not task.done():
            task.cancel()
