"""Fetching an image URL without letting a request reach what the server can but its client should not (SSRF).

For each hop (the URL, then each redirect, a few at most): http or https only; the host is resolved here and
refused if any address it has is loopback, private, link-local, multicast, reserved or otherwise not public; the
connection then goes to the address that was checked (pinned, so a second lookup cannot answer differently), with
the real host name in `Host` and in TLS (SNI and certificate check). Timeouts bound each step and the whole fetch;
the body is read up to a size cap, whatever Content-Length claims. The body is asked for and read raw
(`Accept-Encoding: identity`, `aiter_raw`): a content coding the server applies anyway is undone here, one layer at
most and bounded by the same cap as it streams (`coding.py`), never by httpx without a bound. What the bytes are is
decided by decoding them, never by Content-Type.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urljoin, urlsplit

import httpx

from faisca.images.coding import BoundedDecoder, content_coding
from faisca.images.decode import ImageError

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, NAT64), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses an image URL may reach: public unicast ones, plus `allowed_networks` (none by default)."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be reached (a few words), or None if it may."""
        if any(address in network for network in self.allowed_networks):
            return None
        address = _embedded_ipv4(address)
        if any(address in network for network in self.allowed_networks):
            return None
        for kind, is_kind in (
            ("loopback", address.is_loopback), ("link-local", address.is_link_local),
            ("multicast", address.is_multicast), ("unspecified", address.is_unspecified),
            ("reserved", address.is_reserved), ("private", address.is_private),
        ):
            if is_kind:
                return f"a {kind} address"
        if not address.is_global:
            return "not a public address"
        return None


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 15.0  # the whole fetch, redirects included
    connect_timeout_s: float = 5.0
    max_redirects: int = 3


class SafeFetcher:
    def __init__(self, limits: FetchLimits | None = None, *, policy: AddressPolicy | None = None) -> None:
        self._limits = limits or FetchLimits()
        self._policy = policy or AddressPolicy()
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,  # each hop is checked here
                trust_env=False,  # no proxy from the environment: the pinned address is where the bytes come from
                timeout=httpx.Timeout(self._limits.timeout_s, connect=self._limits.connect_timeout_s),
                # No reuse: a pooled connection is keyed by address, and must never carry another host's request.
                limits=httpx.Limits(max_keepalive_connections=0),
                headers={"User-Agent": "faisca-image-fetch", "Accept": "image/*", "Accept-Encoding": "identity"},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fetch(self, url: str) -> bytes:
        try:
            async with asyncio.timeout(self._limits.timeout_s):
                for _ in range(self._limits.max_redirects + 1):
                    outcome = await self._fetch_hop(url)
                    if isinstance(outcome, bytes):
                        return outcome
                    url = outcome
        except TimeoutError:
            raise ImageError(f"fetching the image took longer than {self._limits.timeout_s:g} s") from None
        except httpx.TimeoutException:
            raise ImageError("fetching the image timed out") from None
        except httpx.HTTPError as exc:
            raise ImageError(f"the image could not be fetched: {type(exc).__name__}: {exc}") from None
        raise ImageError(f"the image URL redirects more than {self._limits.max_redirects} times")

    async def _fetch_hop(self, url: str) -> bytes | str:
        """The body, or the URL the server redirects to."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise ImageError(f"the URL scheme `{parts.scheme}` is not supported; use http(s) or a data URI")
        host = parts.hostname
        if not host:
            raise ImageError("the URL has no host")
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise ImageError("the URL's port is not valid") from None
        address = await self._checked_address(host, port)
        pinned_host = f"[{address}]" if address.version == 6 else str(address)
        netloc = f"{pinned_host}:{port}"
        pinned_url = parts._replace(netloc=netloc).geturl()
        host_header = parts.netloc.rpartition("@")[2]
        extensions = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
        request = self._http().build_request("GET", pinned_url, headers={"Host": host_header}, extensions=extensions)
        response = await self._http().send(request, stream=True)
        try:
            if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
                return urljoin(url, response.headers["location"])
            if response.status_code != 200:
                raise ImageError(f"fetching the image failed: HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._limits.max_bytes:
                raise ImageError(f"the image is larger than {self._limits.max_bytes} bytes")
            decoder = BoundedDecoder(content_coding(response.headers.get_list("content-encoding")),
                                     max_bytes=self._limits.max_bytes)
            body = bytearray()
            num_raw_bytes = 0
            async for piece in response.aiter_raw():  # as sent: the content coding is undone here, bounded
                num_raw_bytes += len(piece)
                if num_raw_bytes > self._limits.max_bytes:
                    raise ImageError(f"the image is larger than {self._limits.max_bytes} bytes")
                body += decoder.feed(piece)
            body += decoder.finish()
            return bytes(body)
        finally:
            await response.aclose()

    async def _checked_address(self, host: str, port: int) -> IPAddress:
        """One address of `host` to connect to, after checking every address it resolves to."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise ImageError(f"the host `{host}` could not be resolved") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        if not addresses:
            raise ImageError(f"the host `{host}` could not be resolved")
        for address in addresses:
            if (why := self._policy.refusal(address)) is not None:
                shown = host if host == str(address) else f"{host} ({address})"
                raise ImageError(f"the URL's host {shown} is {why}; images are fetched from public addresses only")
        return addresses[0]
