"""Decoding uploaded images safely: size and pixel limits checked before any pixel is expanded."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from inference.protocol import ErrorCode, ProtocolError


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 2048 * 2048


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode an uploaded image fully, refusing non-images, truncated files, and oversized ones.

    The pixel limit is checked from the header before any pixel is decoded, so a decompression bomb is
    refused without being expanded.
    """
    if len(data) > limits.max_bytes:
        raise ProtocolError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"image is {len(data)} bytes; the limit is {limits.max_bytes}",
            status=413,
            field="image",
        )
    if not data:
        raise ProtocolError(ErrorCode.BAD_IMAGE, "image is empty", field="image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > limits.max_pixels:
                raise ProtocolError(
                    ErrorCode.IMAGE_TOO_MANY_PIXELS,
                    f"image is {w}x{h} pixels; the limit is {limits.max_pixels} pixels",
                    status=413,
                    field="image",
                )
            img.load()
    except ProtocolError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ProtocolError(
            ErrorCode.IMAGE_TOO_MANY_PIXELS, "image is too many pixels", status=413, field="image"
        ) from None
    except Exception as exc:  # PIL raises many types for broken data; all mean "not a usable image"
        raise ProtocolError(
            ErrorCode.BAD_IMAGE, f"not a readable image ({type(exc).__name__})", field="image"
        ) from None
    return img.convert("RGB")
