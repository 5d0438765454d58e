"""`AI.run(model, payload)`: the edge-function style client of the product pages, over a faisca server.

    from faisca import AI
    answer = AI.run("google-gemma-3-270m", {"messages": [{"role": "user", "content": "Name the european capitals"}]})
    for chunk in AI.run("gemma3:270m", {"stream": True, "messages": [...]}):
        ...

`payload` is a chat completions body; with `"stream": true` `run` returns an iterator of chunk dicts, else the
response dict. `AI` reads its server from `FAISCA_URL` (default http://127.0.0.1:8080) and its API key from
`FAISCA_API_KEY` (default: none) at each call; `Client(base_url, api_key)` and `AsyncClient` do the same for
whichever of the two they are not given. Every failure raises
`FaiscaClientError` with the HTTP `status_code` (None when the server cannot be reached) and the server's message.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class FaiscaClientError(Exception):
    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def _base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("FAISCA_URL") or DEFAULT_URL).rstrip("/")


def _headers(api_key: str | None) -> dict[str, str]:
    api_key = api_key or os.environ.get("FAISCA_API_KEY")
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _body(model: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    return {**payload, "model": model}


def _raise_for_error(status_code: int, body: bytes) -> None:
    if status_code < 400:
        return
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace") or f"HTTP {status_code}"
    raise FaiscaClientError(message, status_code=status_code)


def _sse_payload(line: str) -> dict[str, Any] | None:
    """The chunk in one SSE line; None for other lines and the end marker; an in-band error raises."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None
    chunk = json.loads(line.removeprefix("data: "))
    if "error" in chunk:
        raise FaiscaClientError(chunk["error"].get("message", "stream failed"), status_code=None)
    return chunk


class _Server:
    """Where the server is: a fixed `base_url`, or (None) `FAISCA_URL` at each call; the same for the API key and
    `FAISCA_API_KEY`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout_s: float = 600) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._timeout_s = timeout_s

    @property
    def base_url(self) -> str:
        return _base_url(self._base_url)


class Client(_Server):
    def run(self, model: str, payload: Mapping[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        if payload.get("stream"):
            return self._stream(model, payload)
        try:
            response = httpx.post(f"{self.base_url}/v1/chat/completions", json=_body(model, payload),
                                  headers=_headers(self._api_key), timeout=self._timeout_s)
        except httpx.TransportError as exc:
            raise FaiscaClientError(f"cannot reach faisca at {self.base_url}: {exc}") from exc
        _raise_for_error(response.status_code, response.content)
        return response.json()

    def _stream(self, model: str, payload: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        try:
            with httpx.stream("POST", f"{self.base_url}/v1/chat/completions", json=_body(model, payload),
                              headers=_headers(self._api_key), timeout=self._timeout_s) as response:
                _raise_for_error(response.status_code, response.read() if response.status_code >= 400 else b"")
                for line in response.iter_lines():
                    if (chunk := _sse_payload(line)) is not None:
                        yield chunk
        except httpx.TransportError as exc:
            raise FaiscaClientError(f"cannot reach faisca at {self.base_url}: {exc}") from exc


class AsyncClient(_Server):
    async def run(self, model: str, payload: Mapping[str, Any]) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        if payload.get("stream"):
            return self._stream(model, payload)
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s) as session:
                response = await session.post(f"{self.base_url}/v1/chat/completions", json=_body(model, payload),
                                              headers=_headers(self._api_key))
        except httpx.TransportError as exc:
            raise FaiscaClientError(f"cannot reach faisca at {self.base_url}: {exc}") from exc
        _raise_for_error(response.status_code, response.content)
        return response.json()

    async def _stream(self, model: str, payload: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s) as session:
                async with session.stream("POST", f"{self.base_url}/v1/chat/completions", json=_body(model, payload),
                                          headers=_headers(self._api_key)) as response:
                    _raise_for_error(response.status_code, await response.aread() if response.status_code >= 400 else b"")
                    async for line in response.aiter_lines():
                        if (chunk := _sse_payload(line)) is not None:
                            yield chunk
        except httpx.TransportError as exc:
            raise FaiscaClientError(f"cannot reach faisca at {self.base_url}: {exc}") from exc


# The default client of the product pages' examples: its server comes from FAISCA_URL at each call.
AI = Client()
