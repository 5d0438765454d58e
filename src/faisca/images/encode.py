"""A decoded image → a PNG data URI: what faisca sends an upstream in place of the image a client sent, so that an
upstream only ever reads pixels faisca decoded and checked, never a URL a client chose or bytes it crafted."""

from __future__ import annotations

import base64
import io

from PIL import Image

from faisca.images.decode import DecodedImage


def png_data_uri(image: DecodedImage) -> str:
    """(A worker thread's work: it grows with the pixels.) Lossless, so the upstream sees what faisca decoded."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (image.width, image.height), image.rgb).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
