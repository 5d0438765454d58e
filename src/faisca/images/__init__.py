"""Images a request carries: where they come from (data URIs, URLs, base64), fetched safely and decoded to RGB."""

from faisca.images.decode import DecodedImage, ImageError, decode_image
from faisca.images.encode import png_data_uri
from faisca.images.fetch import AddressPolicy, SafeFetcher
from faisca.images.loader import ImageLimits, ImageLoader

__all__ = [
    "AddressPolicy", "DecodedImage", "ImageError", "ImageLimits", "ImageLoader", "SafeFetcher", "decode_image", "png_data_uri",
]
