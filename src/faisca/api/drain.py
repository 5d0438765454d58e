"""Graceful shutdown, the app's side: once draining, new requests get 503 while the ones in flight finish.

The process side (signals, the drain timeout, the watchdog) is `faisca.cli.server`; it starts the drain and waits
for `num_in_flight` to reach 0. `/health` goes on answering (503, "draining") so that load balancers see it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from faisca.api.errors import error_response
from faisca.errors import ShuttingDown

# What a refused client is told to wait before retrying (elsewhere, or here once restarted).
RETRY_AFTER_S = 5


class Drain:
    """Whether the server is draining, and how many requests are in flight. Used on the event loop's thread only
    (the signal handler that starts it runs there too)."""

    def __init__(self) -> None:
        self.is_draining = False
        self.num_in_flight = 0

    def start(self) -> None:
        self.is_draining = True


class RefuseWhileDraining:
    """Plain ASGI: counts requests in flight (a stream until its last byte), and refuses new ones while draining."""

    def __init__(self, app: ASGIApp, *, drain: Drain) -> None:
        self._app = app
        self._drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self._app(scope, receive, send)
        if self._drain.is_draining and scope["path"] != "/health":
            response = error_response(
                ShuttingDown("The server is shutting down; retry shortly.", retry_after_s=RETRY_AFTER_S),
                path=scope["path"],
            )
            response.headers["Connection"] = "close"  # the client reconnects, perhaps to another instance
            return await response(scope, receive, send)
        self._drain.num_in_flight += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._drain.num_in_flight -= 1
