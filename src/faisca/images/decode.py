"""Bytes → an RGB image, trusting nothing the sender said: the format is sniffed from the bytes, the size is
checked from the header before any pixel is decoded (decompression bombs), and only still formats are taken."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's names of the formats accepted (the ones OpenAI documents: png, jpeg, webp, non-animated gif).
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


class ImageError(ValueError):
    """An image that cannot be used; the message says why, in words a client can act on."""


@dataclass(frozen=True)
class DecodedImage:
    width: int
    height: int
    rgb: bytes = b""  # width * height * 3 bytes, row-major
    # Content digest of the pixels: the same picture sent twice (even re-encoded losslessly) has the same digest.
    digest: str = ""


def decode_image(data: bytes, *, max_pixels: int) -> DecodedImage:
    """The first frame of a PNG, JPEG, WebP or GIF, upright (EXIF orientation applied), as RGB."""
    if not data:
        raise ImageError("the image is empty")
    too_large = f"the image has more pixels than the {max_pixels} this server decodes"
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns at its default limit; ours (below, from the header) decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise ImageError("the data is not an image in a supported format (PNG, JPEG, WebP or GIF)") from None
    except Image.DecompressionBombError:
        raise ImageError(too_large) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"the image cannot be read: {exc}") from None
    with image:
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageError("the image has no pixels")
        if width * height > max_pixels:
            raise ImageError(f"the image is {width}x{height} pixels, more than the {max_pixels} this server decodes")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.seek(0)
                rgb = _to_rgb(ImageOps.exif_transpose(image))
        except Image.DecompressionBombError:
            raise ImageError(too_large) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(f"the image is damaged: {exc}") from None
    pixels = rgb.tobytes()
    digest = hashlib.blake2b(pixels, digest_size=16, person=b"faisca-image").hexdigest()
    return DecodedImage(rgb.width, rgb.height, pixels, f"{rgb.width}x{rgb.height}:{digest}")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Transparent pixels become white (as a viewer shows them), not whatever colour they hid."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
