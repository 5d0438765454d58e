"""An HTTP body's content coding (`Content-Encoding`), undone without ever holding more than the image byte limit.

Image fetches ask for `Accept-Encoding: identity` and read the raw body, so nothing is decompressed behind the size
cap's back (httpx's own decoding expands a stacked `gzip, gzip` without a bound: a few KB on the wire, gigabytes in
memory). A server may still send one layer of gzip or deflate (an object stored compressed, served as it is): that
one layer is undone here with zlib's `max_length`, so no piece of input expands past what is left of the limit.
Stacked codings and any other coding (br, zstd, compress) are refused.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from faisca.images.decode import ImageError

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip stream
_ZLIB_WBITS = zlib.MAX_WBITS  # "deflate" as HTTP means it: a zlib stream
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS  # "deflate" as some servers send it: no zlib header
_NO_CODING = ("", "identity")


def content_coding(values: Iterable[str]) -> str:
    """The one coding the `Content-Encoding` header values name ("" for none): ImageError if stacked or unknown."""
    codings = [coding for value in values for part in value.split(",")
               if (coding := part.strip().lower()) not in _NO_CODING]
    if len(codings) > 1:
        raise ImageError(f"the image is sent with stacked content codings ({', '.join(codings)}); "
                         "one layer of gzip or deflate at most is accepted")
    coding = codings[0] if codings else ""
    if coding not in ("", "gzip", "x-gzip", "deflate"):
        raise ImageError(f"the image is sent with the content coding `{coding}`; "
                         "only gzip or deflate (or none) is accepted")
    return coding


class BoundedDecoder:
    """Undoes one content coding, piece by piece; ImageError as soon as the decoded bytes pass `max_bytes`."""

    def __init__(self, coding: str, *, max_bytes: int) -> None:
        self._coding = coding
        self._max_bytes = max_bytes
        self.num_decoded_bytes = 0
        self._zlib: zlib._Decompress | None = None  # created at the first bytes (deflate: from its header)
        self._head = b""  # deflate: the first byte, until the second shows whether a zlib header starts the data
        if coding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(_GZIP_WBITS)

    def feed(self, data: bytes) -> bytes:
        if not self._coding:
            return self._counted(data)
        if self._zlib is None:  # deflate: a zlib header, or raw deflate data
            data, self._head = self._head + data, b""
            if len(data) < 2:
                self._head = data
                return b""
            is_zlib = data[0] & 0x0F == 8 and int.from_bytes(data[:2], "big") % 31 == 0
            self._zlib = zlib.decompressobj(_ZLIB_WBITS if is_zlib else _RAW_DEFLATE_WBITS)
        pieces = []
        try:
            while data:
                room = self._max_bytes - self.num_decoded_bytes
                piece = self._zlib.decompress(data, room + 1)  # one byte more than fits shows it does not fit
                pieces.append(self._counted(piece))
                data = self._zlib.unconsumed_tail
                if self._zlib.eof:  # the end of a gzip member; another may follow (RFC 1952 allows several)
                    data = self._zlib.unused_data
                    if data and self._coding != "deflate":
                        self._zlib = zlib.decompressobj(_GZIP_WBITS)
                    elif data:
                        raise ImageError(f"the image's {self._coding} data goes on after its end")
        except zlib.error as exc:
            raise ImageError(f"the image's {self._coding} coding is damaged: {exc}") from None
        return b"".join(pieces)

    def finish(self) -> bytes:
        """The end of the body: ImageError if the coded data stopped short."""
        if self._coding and (self._zlib is None or not self._zlib.eof):
            raise ImageError(f"the image's {self._coding} data ends too soon")
        return b""

    def _counted(self, piece: bytes) -> bytes:
        self.num_decoded_bytes += len(piece)
        if self.num_decoded_bytes > self._max_bytes:
            raise ImageError(f"the image is larger than {self._max_bytes} bytes")
        return piece
