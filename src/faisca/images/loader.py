"""An image reference from a request (a data URI, an http(s) URL, or raw base64 wrapped as a data URI by the
Ollama surface) → a decoded RGB image, or an `InvalidRequest` naming the part it came from.

A request carries `max_per_request` images at most (checked before anything is fetched). Decoding runs on a pool of
`max_decodes_in_flight` threads of this loader's own, never on the event loop: however many requests send images at
once, that many are decoded at a time (each at most `max_pixels`), the others wait as their encoded bytes; a decode
whose request went away before it started is cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from faisca.errors import InvalidRequest
from faisca.images.decode import DecodedImage, ImageError, decode_image
from faisca.images.fetch import FetchLimits, SafeFetcher


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024  # encoded, as sent or fetched
    max_pixels: int = 8192 * 8192  # decoded; more is refused from the header, before decoding
    fetch_timeout_s: float = 15.0
    max_redirects: int = 3
    max_per_request: int = 8  # images in one request; more are refused before any is fetched
    max_decodes_in_flight: int = 2  # images decoded at once, across requests (each a thread)

    @property
    def fetch(self) -> FetchLimits:
        return FetchLimits(max_bytes=self.max_bytes, timeout_s=self.fetch_timeout_s, max_redirects=self.max_redirects)


def data_uri_bytes(uri: str, *, max_bytes: int) -> bytes:
    """The bytes of `data:[<media type>];base64,<data>`; the media type is not trusted (the bytes are sniffed)."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.lower().endswith(";base64"):
        raise ImageError("a data URI must be base64-encoded: data:image/png;base64,...")
    if len(payload) > (max_bytes * 4) // 3 + 4:
        raise ImageError(f"the image is larger than {max_bytes} bytes")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the data URI is not valid base64") from None


class ImageLoader:
    def __init__(self, limits: ImageLimits | None = None, *, fetcher: SafeFetcher | None = None) -> None:
        self._limits = limits or ImageLimits()
        self._fetcher = fetcher or SafeFetcher(self._limits.fetch)
        self._decoders = ThreadPoolExecutor(max_workers=self._limits.max_decodes_in_flight,
                                            thread_name_prefix="image-decode")

    def check_count(self, sources: list[tuple[str, str]]) -> None:
        """InvalidRequest naming the first image past `max_per_request` (`(source, param)` pairs, in request order)."""
        if len(sources) > (limit := self._limits.max_per_request):
            param = sources[limit][1]
            raise InvalidRequest(
                f"{param}: a request may carry {limit} images at most (--max-images-per-request); this one has "
                f"{len(sources)}", param=param,
            )

    async def load(self, source: str, *, param: str) -> DecodedImage:
        try:
            data = await self._bytes(source)
            # Cancelled with its request before a decoder thread took it: it never runs (wrap_future cancels it).
            return await asyncio.wrap_future(
                self._decoders.submit(decode_image, data, max_pixels=self._limits.max_pixels))
        except ImageError as exc:
            raise InvalidRequest(f"{param}: {exc}", param=param) from None

    async def load_all(self, sources: list[tuple[str, str]]) -> tuple[DecodedImage, ...]:
        """`(source, param)` pairs, loaded concurrently; the first failure (in request order) is raised."""
        self.check_count(sources)
        results = await asyncio.gather(*(self.load(source, param=param) for source, param in sources),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return tuple(results)  # type: ignore[arg-type]

    async def _bytes(self, source: str) -> bytes:
        if source[:5].lower() == "data:":
            return data_uri_bytes(source, max_bytes=self._limits.max_bytes)
        scheme = urlsplit(source).scheme.lower()
        if scheme in ("http", "https"):
            return await self._fetcher.fetch(source)
        if scheme:
            raise ImageError(f"the URL scheme `{scheme}` is not supported; send an http(s) URL or a data URI")
        raise ImageError("expected an http(s) URL or a data URI (data:image/png;base64,...)")

    async def aclose(self) -> None:
        await self._fetcher.aclose()
        self._decoders.shutdown(wait=False, cancel_futures=True)
