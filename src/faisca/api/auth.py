"""API keys: one plain-ASGI middleware in front of every route, so a route added later cannot forget the key.

Every request but `/health`, `GET|HEAD /` and `GET|HEAD /ui…` (the chat page's files: they hold no secret; the page
sends the key the user types with its API calls) carries `Authorization: Bearer KEY` (Ollama's clients send it through
their `headers`). A missing or wrong key is a 401 in the surface's own error shape.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from faisca.api.errors import error_response
from faisca.errors import Unauthorized


class ApiKeys:
    """The accepted keys. A token is compared with every key, in constant time and without stopping at a match, so
    neither the timing nor the work done tells which key (or which prefix of one) it is close to. Both sides are
    hashed first, so their lengths are equal too."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(hashlib.sha256(key.encode("utf-8")).digest() for key in keys)
        if not self._digests:
            raise ValueError("ApiKeys needs at least one key")

    def accepts(self, token: bytes) -> bool:
        digest = hashlib.sha256(token).digest()
        matches = [hmac.compare_digest(digest, key_digest) for key_digest in self._digests]  # every key, always
        return any(matches)


def bearer_token(scope: Scope) -> bytes | None:
    """The token of `Authorization: Bearer <token>`, as sent; None when there is no such header."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


def is_public(method: str, path: str) -> bool:
    """Routes that need no key: the health check (load balancers, orchestrators), the root liveness text (or the chat
    page, for a browser) and the chat page's files."""
    if path == "/health":
        return True
    is_page = path in ("/", "/ui") or path.startswith("/ui/")
    return is_page and method in ("GET", "HEAD")


class RequireApiKey:
    def __init__(self, app: ASGIApp, *, keys: ApiKeys) -> None:
        self._app = app
        self._keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or is_public(scope.get("method", "GET"), scope["path"]):
            return await self._app(scope, receive, send)
        token = bearer_token(scope)
        if token is not None and self._keys.accepts(token):
            return await self._app(scope, receive, send)
        if scope["type"] != "http":  # a websocket (none is served today): refuse the handshake
            return await send({"type": "websocket.close", "code": 1008})
        message = ("Missing API key: send `Authorization: Bearer <key>`." if token is None
                   else "Incorrect API key: send `Authorization: Bearer <key>` with one of the server's keys.")
        response = error_response(Unauthorized(message), path=scope["path"])
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
