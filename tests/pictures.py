"""Pictures for the image tests, made on the spot."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    return encoded(Image.new("RGB", size, color), "PNG")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header says width x height: decoding it would take width*height*3 bytes (the
    shape of a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
