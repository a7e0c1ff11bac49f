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
    return _open_checked(data, limits).convert("RGB")


def _open_checked(data: bytes, limits: ImageLimits) -> Image.Image:
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
    return img


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """An input image checked whole once, then kept compressed while its job waits.

    A decoded 2048x2048 picture is 12 MB of pixels while its PNG may be a few KB: a queue of jobs holds
    only these bytes, and the pixels exist only while a batch is being prepared.
    """

    data: bytes
    width: int
    height: int

    @classmethod
    def check(cls, data: bytes, limits: ImageLimits) -> EncodedImage:
        """Decode the upload fully (refusing broken or oversized ones), keep the bytes, drop the pixels."""
        img = _open_checked(data, limits)
        try:
            return cls(data=data, width=img.width, height=img.height)
        finally:
            img.close()

    @classmethod
    def of(cls, img: Image.Image) -> EncodedImage:
        """An image already in memory, kept as PNG (lossless: decoding gives the same pixels back)."""
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return cls(data=buf.getvalue(), width=img.width, height=img.height)

    def decode(self, size: tuple[int, int] | None = None) -> Image.Image:
        """The pixels as RGB, resized to `size` at once so only one full-size copy ever lives."""
        with Image.open(io.BytesIO(self.data)) as img:
            rgb = img.convert("RGB")
        if size is not None and rgb.size != size:
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        return rgb
