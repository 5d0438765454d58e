"""A model served by OpenAI-compatible servers elsewhere: its replicas kept probed, a request routed to one, retried
on another while nothing of its answer has reached the client, and its answer streamed back as faisca's events.

`open` returns only once the chosen replica's answer has begun (its first token, tool call or end), so that every
failure before that (refused connection, 5xx, 429, a stream broken before its first token) is retried on another
replica (each replica once, `MAX_ATTEMPTS` in all), and an upstream's 4xx is the client's answer with its status.
After that, a replica that breaks off ends the stream with `UpstreamError`, which the surfaces send in band: never a
hang, never a second, duplicated answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from faisca.errors import FaiscaError, InvalidRequest, NoReplica, PayloadTooLarge, UpstreamError
from faisca.fleet.replicas import (
    PROBE_TIMEOUT_S, RESOLVE_INTERVAL_S, Endpoint, ModelListing, Replica, addresses_from, pick_listing,
)
from faisca.fleet.routing import choose
from faisca.fleet.wire import ChunkDecoder, UpstreamCall, UpstreamProtocolError, request_body
from faisca.types import ChatEvent, TextDelta

logger = logging.getLogger("faisca.fleet")

MAX_ATTEMPTS = 3  # replicas tried for one request before it is answered 503
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 600.0  # between two reads of an answer: a long queue upstream, or a long prefill
MAX_LINE_BYTES = 8 * 1024 * 1024  # one line of an upstream's stream (a chunk); longer is a broken upstream
MAX_ERROR_BYTES = 64 * 1024  # of an upstream's error body, read to pass its message on
RETRY_AFTER_S = 2
_WATCH_TICK_S = 0.25
_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ReplicaStats:
    model: str
    replica: str
    is_up: bool
    num_running: int
    num_requests: int
    num_errors: int


# `loop.getaddrinfo`'s signature: (host, port, type=...) -> [(family, type, proto, canonname, sockaddr), ...]
Resolver = Callable[..., Awaitable[list[tuple[Any, ...]]]]


class _Retry(Exception):
    """This replica failed the request before its first byte: try another."""


async def _lines(response: httpx.Response) -> AsyncIterator[bytes]:
    """The lines of a streamed body, each bounded (`MAX_LINE_BYTES`)."""
    pending = bytearray()
    async for data in response.aiter_bytes():
        pending += data
        while (end := pending.find(b"\n")) >= 0:
            yield bytes(pending[:end]).rstrip(b"\r")
            del pending[:end + 1]
        if len(pending) > MAX_LINE_BYTES:
            raise UpstreamProtocolError(f"a line of the upstream's stream is longer than {MAX_LINE_BYTES} bytes")
    if pending:
        yield bytes(pending)


async def _chunks(response: httpx.Response) -> AsyncIterator[object]:
    """The JSON chunks of an SSE answer, up to `data: [DONE]`; a stream that stops before it is broken."""
    async for line in _lines(response):
        if not line.startswith(b"data:"):
            continue  # blank lines between events, comments, `event:` names
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError:
            raise UpstreamProtocolError("a streamed chunk is not JSON") from None
    raise UpstreamProtocolError("the upstream's stream ended without `[DONE]`")


def _shows_progress(event: ChatEvent) -> bool:
    """Whether an event is part of the answer proper (a token, a call, an end), not just its opening."""
    return not isinstance(event, TextDelta) or bool(event.text)


async def _error_message(response: httpx.Response) -> str:
    """The message of an upstream's error body (OpenAI's, vLLM's older flat one, FastAPI's `detail`), bounded."""
    body = bytearray()
    async for data in response.aiter_bytes():
        body += data
        if len(body) > MAX_ERROR_BYTES:
            break
    await response.aclose()
    try:
        parsed = json.loads(bytes(body[:MAX_ERROR_BYTES]))
    except ValueError:
        return bytes(body[:500]).decode("utf-8", "replace").strip() or f"HTTP {response.status_code}"
    error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail")
        return str(message) if message is not None else str(error)[:500]
    return str(error)[:500]


def _client_error(status: int, message: str) -> FaiscaError:
    """An upstream's 4xx for a request, as faisca's error: the client's fault is still the client's."""
    if status in (400, 422):
        return InvalidRequest(message)
    if status == 413:
        return PayloadTooLarge(message)
    # 401, 403, 404...: faisca's configuration (its key, the served name), not the client
    return UpstreamError(f"The upstream refused the request (HTTP {status}): {message}")


class UpstreamStream:
    """One request's answer from one replica: its events, the replica's load held until the stream ends."""

    def __init__(self, fleet: Fleet, replica: Replica, response: httpx.Response, chunks: AsyncIterator[object],
                 decoder: ChunkDecoder, first: list[ChatEvent], num_choices: int, first_event_s: float) -> None:
        self.replica = replica
        self.first_event_s = first_event_s  # from sending the request to its first token (or end)
        self._fleet = fleet
        self._response = response
        self._chunks = chunks
        self._decoder = decoder
        self._first = first
        self._num_choices = num_choices
        self._released = False

    async def events(self) -> AsyncIterator[ChatEvent]:
        try:
            for event in self._first:
                yield event
            try:
                async for chunk in self._chunks:
                    for event in self._decoder.events(chunk):
                        yield event
                for event in self._decoder.end(self._num_choices):
                    yield event
            except (httpx.HTTPError, UpstreamProtocolError) as exc:
                self._fleet.failed(self.replica, exc, broke_stream=True)
                raise UpstreamError(f"The upstream replica {self.replica.key} stopped in the middle of the answer "
                                    f"({_describe(exc)}).") from None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self.replica.outstanding -= 1
            await self._response.aclose()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Fleet:
    """The replicas of one model, kept probed in the background while `start`ed."""

    def __init__(self, model_id: str, urls: Sequence[str], *, wanted_names: Sequence[str],
                 served_name: str | None = None, api_key: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, resolver: Resolver | None = None) -> None:
        self.model_id = model_id
        self._endpoints = [Endpoint(url) for url in urls]
        self._wanted_names = tuple(wanted_names)
        self._served_name = served_name
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64), follow_redirects=False,
            trust_env=False)
        self._resolver = resolver
        self._replicas: dict[str, Replica] = {}
        self._next_resolve_at_s = 0.0
        self._watching: asyncio.Task[None] | None = None

    @property
    def replicas(self) -> list[Replica]:
        return list(self._replicas.values())

    @property
    def num_up(self) -> int:
        return sum(replica.is_up for replica in self._replicas.values())

    @property
    def max_model_len(self) -> int | None:
        """The context an up replica reports (vLLM's `max_model_len`), if any does."""
        return next((replica.listing.max_model_len for replica in self._replicas.values()
                     if replica.is_up and replica.listing and replica.listing.max_model_len), None)

    def state(self) -> str:
        return "ready" if self.num_up else f"failed: {self.why_down()}"

    def why_down(self) -> str:
        reasons = "; ".join(f"{replica.key}: {replica.down_reason}" for replica in self._replicas.values())
        return f"No replica of `{self.model_id}` is up ({reasons})"

    def stats(self) -> list[ReplicaStats]:
        return [ReplicaStats(self.model_id, replica.key, replica.is_up, replica.outstanding, replica.num_requests,
                             replica.num_errors) for replica in self._replicas.values()]

    async def start(self) -> None:
        """Resolve the URLs and probe every replica once, then keep doing so in the background."""
        await self._resolve()
        await asyncio.gather(*(self._probe(replica) for replica in self._replicas.values()))
        self._watching = asyncio.create_task(self._watch(), name=f"fleet-{self.model_id}")

    async def aclose(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
        await self._client.aclose()

    # --- requests

    async def open(self, call: UpstreamCall, *, affinity: str | None = None) -> UpstreamStream:
        """The answer to `call` from one replica, begun. NoReplica (503) when none could take it."""
        tried: set[str] = set()
        failures: list[str] = []
        for _ in range(MAX_ATTEMPTS):
            candidates = [replica for replica in self._replicas.values()
                          if replica.is_up and replica.key not in tried and replica.listing is not None]
            replica = choose(candidates, affinity)
            if replica is None:
                break
            tried.add(replica.key)
            try:
                return await self._open_on(replica, call)
            except _Retry as exc:
                failures.append(f"{replica.key}: {exc}")
        detail = f" ({'; '.join(failures)})" if failures else ""
        raise NoReplica(f"No replica of `{self.model_id}` could take the request{detail}; retry shortly.",
                        retry_after_s=RETRY_AFTER_S)

    async def _open_on(self, replica: Replica, call: UpstreamCall) -> UpstreamStream:
        listing = replica.listing
        assert listing is not None
        path, body = request_body(call, served_name=listing.served_name, owned_by=listing.owned_by)
        replica.outstanding += 1
        replica.num_requests += 1
        sent_at_s = time.perf_counter()
        response: httpx.Response | None = None
        try:
            request = self._client.build_request("POST", f"{replica.base_url}/{path}", json=body,
                                                 headers=self._request_headers(replica))
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                self.failed(replica, exc)
                raise _Retry(_describe(exc)) from None
            if response.status_code != 200:
                message = await _error_message(response)
                if response.status_code in _RETRYABLE_STATUSES:
                    replica.num_errors += 1
                    raise _Retry(f"HTTP {response.status_code}: {message}")
                raise _client_error(response.status_code, message)
            chunks = _chunks(response)
            decoder = ChunkDecoder()
            first: list[ChatEvent] = []
            try:
                while not any(_shows_progress(event) for event in first):
                    chunk = await anext(chunks, None)
                    first += decoder.end(call.request.num_choices) if chunk is None else decoder.events(chunk)
            except (httpx.HTTPError, UpstreamProtocolError) as exc:
                self.failed(replica, exc, broke_stream=True)
                raise _Retry(_describe(exc)) from None
            stream = UpstreamStream(self, replica, response, chunks, decoder, first, call.request.num_choices,
                                    time.perf_counter() - sent_at_s)
            response = None  # the stream owns it now
            return stream
        except BaseException:
            replica.outstanding -= 1
            raise
        finally:
            if response is not None:
                await response.aclose()

    def failed(self, replica: Replica, exc: BaseException, *, broke_stream: bool = False) -> None:
        """A request saw `replica` fail: a connection error or a broken stream takes it out until a probe finds it
        back (an upstream's in-band error only counts)."""
        replica.num_errors += 1
        if isinstance(exc, httpx.TransportError) or (broke_stream and not isinstance(exc, UpstreamProtocolError)):
            if replica.is_up:
                logger.warning("upstream %s of %s is down: %s", replica.key, self.model_id, _describe(exc))
            replica.mark_down(_describe(exc), time.monotonic())

    def _request_headers(self, replica: Replica) -> dict[str, str]:
        headers = dict(self._headers)
        if replica.host_header is not None:
            headers["Host"] = replica.host_header
        return headers

    # --- health

    async def _probe(self, replica: Replica) -> None:
        now_s = time.monotonic()
        try:
            response = await self._client.get(f"{replica.base_url}/models", headers=self._request_headers(replica),
                                               timeout=PROBE_TIMEOUT_S)
            if response.status_code != 200:
                raise ValueError(f"GET /models answered HTTP {response.status_code}")
            listing = pick_listing(response.json(), self._wanted_names, self._served_name)
            await self._check_ready(replica, listing)
        except (httpx.HTTPError, ValueError) as exc:
            if replica.is_up or replica.down_reason == "not probed yet":
                logger.warning("upstream %s of %s is down: %s", replica.key, self.model_id, _describe(exc))
            replica.mark_down(_describe(exc), now_s)
            return
        if not replica.is_up:
            logger.info("upstream %s of %s is up (serving it as `%s`, %s)", replica.key, self.model_id,
                        listing.served_name, listing.owned_by or "unknown server")
        replica.mark_up(listing, now_s)

    async def _check_ready(self, replica: Replica, listing: ModelListing) -> None:
        """A server lists its models before it can answer for them (faisca while loading, vLLM and SGLang while
        starting): its `/health`, beside the OpenAI base, says whether it can. faisca's names each model's state (and
        lists its whole catalog in `/models`, served or not); a server without the route (llama-cpp-python's) is
        taken at its word. ValueError saying why it is not ready."""
        root = replica.base_url.removesuffix("/v1")
        response = await self._client.get(f"{root}/health", headers=self._request_headers(replica),
                                          timeout=PROBE_TIMEOUT_S)
        if listing.owned_by == "faisca":
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            models = body.get("models") if isinstance(body, dict) else None
            state = models.get(listing.served_name) if isinstance(models, dict) else None
            if response.status_code == 503 and state in (None, "loading"):
                raise ValueError("it is still starting")
            if state is not None and state.startswith("failed"):
                raise ValueError(f"`{listing.served_name}` {state} there")
            if state is None:  # not in memory there: one it loads on demand, or a card it only lists
                await self._check_served(replica, listing.served_name)
        elif response.status_code not in (200, 404):
            raise ValueError(f"its /health answered HTTP {response.status_code}")

    async def _check_served(self, replica: Replica, name: str) -> None:
        """faisca's model entry says whether it serves the model (loaded or on demand). ValueError when not."""
        response = await self._client.get(f"{replica.base_url}/models/{name}", headers=self._request_headers(replica),
                                          timeout=PROBE_TIMEOUT_S)
        entry = response.json() if response.status_code == 200 else None
        if not isinstance(entry, dict) or entry.get("served") is not True:
            raise ValueError(f"it lists `{name}` in its catalog but does not serve it")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(_WATCH_TICK_S)
            try:
                if time.monotonic() >= self._next_resolve_at_s:
                    await self._resolve()
                now_s = time.monotonic()
                due = [replica for replica in self._replicas.values() if replica.next_probe_at_s <= now_s]
                await asyncio.gather(*(self._probe(replica) for replica in due))
            except Exception:  # the watch must go on: one bad round is logged, the next one tries again
                logger.exception("watching the replicas of %s", self.model_id)

    async def _resolve(self) -> None:
        """Re-resolve the host names; replicas whose address left are retired, new ones are probed first."""
        self._next_resolve_at_s = time.monotonic() + RESOLVE_INTERVAL_S
        resolve = self._resolver or asyncio.get_running_loop().getaddrinfo
        for position, endpoint in enumerate(self._endpoints):
            if not endpoint.resolvable:
                continue
            parts = urlsplit(endpoint.url)
            try:
                infos = await asyncio.wait_for(
                    resolve(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM), PROBE_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                logger.warning("cannot resolve %s (keeping its replicas as they were): %s", endpoint.url, exc)
                continue
            self._endpoints[position] = Endpoint(endpoint.url, addresses_from(infos))
        targets = {key: (base, host) for endpoint in self._endpoints for key, base, host in endpoint.replica_targets()}
        for key in [key for key in self._replicas if key not in targets]:
            logger.info("upstream %s of %s left the name's addresses", key, self.model_id)
            self._replicas.pop(key).retired = True
        for key, (base, host) in targets.items():
            if key not in self._replicas:
                self._replicas[key] = Replica(key, base, host)
