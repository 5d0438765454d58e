"""Serving the app with uvicorn, with a graceful shutdown: SIGTERM or SIGINT drains, then the process exits 0.

uvicorn's own handling closes the listener at once and gives no 503 to new requests. Here the first signal only
starts the drain (`faisca.api.drain`): the listener stays open, new requests get 503, `/health` says "draining", and
the requests in flight (streams included) finish; once none is left, or `drain_timeout_s` has passed, uvicorn's
shutdown runs (what is still in flight then gets `_CANCEL_AFTER_S` more, then is cancelled). A second SIGINT
(Ctrl-C twice) exits at once.

The signal handler is a plain `signal.signal` one (uvicorn installs `handle_exit` so): Python runs it on the main
thread between two bytecodes, even while the event loop is busy with one request and never gets to its timers. So
it also wakes a watchdog thread, outside the event loop, which ends the process (exit code 1) if it is still alive
`grace_s` after the drain timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType

import uvicorn

from faisca.api.drain import Drain

logger = logging.getLogger("faisca.server")

# After the drain timeout, what is still in flight gets this long before uvicorn cancels it.
_CANCEL_AFTER_S = 2.0
# After the drain timeout, how long the watchdog lets the shutdown (cancelling, closing the engines) take.
DEFAULT_GRACE_S = 10.0


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, drain: Drain, drain_timeout_s: float,
                 grace_s: float = DEFAULT_GRACE_S) -> None:
        config.timeout_graceful_shutdown = _CANCEL_AFTER_S
        super().__init__(config)
        self._drain = drain
        self._drain_timeout_s = drain_timeout_s
        self._grace_s = grace_s
        self._drain_deadline: float | None = None  # monotonic seconds; None until a signal
        self._signalled = threading.Event()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The signal handler. Unlike uvicorn's, it does not record the signal to raise it again after the shutdown:
        a drained server exits 0."""
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self._drain_timeout_s
            self._drain.start()
            self._signalled.set()
            logger.info("%s: draining (%d requests in flight, at most %g s), new requests get 503",
                        signal.Signals(sig).name, self._drain.num_in_flight, self._drain_timeout_s)
        elif sig == signal.SIGINT:
            logger.info("SIGINT again: exiting now")
            self.should_exit = self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if self._drain_deadline is None:
            return False
        if self._drain.num_in_flight == 0:
            return True
        if time.monotonic() >= self._drain_deadline:
            logger.warning("drain timeout: %d requests still in flight are cut", self._drain.num_in_flight)
            return True
        return False

    def _watchdog(self) -> None:
        self._signalled.wait()
        time.sleep(self._drain_timeout_s + self._grace_s)
        print(f"faisca: still running {self._drain_timeout_s + self._grace_s:g} s after the signal "
              "(the event loop does not answer); exiting", file=sys.stderr, flush=True)
        os._exit(1)


def serve(app: object, *, host: str, port: int, log_level: str, drain: Drain, drain_timeout_s: float) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level)  # type: ignore[arg-type]
    DrainingServer(config, drain=drain, drain_timeout_s=drain_timeout_s).run()
