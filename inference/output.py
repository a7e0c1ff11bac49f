"""Encoding finished pictures: the output formats, their metadata, and the pool that encodes off the GPU's path.

The engine hands back each picture as uint8 pixels with its generation metadata; the scheduler encodes
them here on a thread pool while the next batch already runs. PIL's PNG, WebP and JPEG encoders do their
work in C with the GIL released (`bench/encode.py` measures the speed-up of a pool of threads), so
threads are enough. The metadata travels in every format: PNG text chunks, and an XMP packet in WebP and
JPEG. No torch here: the scheduler imports this module.
"""

from __future__ import annotations

import io
import os
import re
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from inference.settings import OutputFormat, WorkerSettings

OUTPUT_FORMATS = tuple(OutputFormat)
MEDIA_TYPES = {
    OutputFormat.PNG: "image/png",
    OutputFormat.WEBP: "image/webp",
    OutputFormat.WEBP_LOSSLESS: "image/webp",
    OutputFormat.JPEG: "image/jpeg",
}
WEBP_METHOD = 2  # libwebp's effort 0-6: 2 is about twice as fast as its default 4 for the same size here
XMP_NAMESPACE = "https://github.com/brushfire/ns/generation/1.0/"
_XML_INVALID = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class OutputSettings:
    """How pictures are encoded: the format and each format's knobs (see `WorkerSettings`)."""

    format: OutputFormat = OutputFormat.PNG
    png_compress_level: int = 1
    webp_quality: int = 90
    jpeg_quality: int = 95

    @classmethod
    def of(cls, settings: WorkerSettings) -> OutputSettings:
        return cls(
            format=settings.output_format,
            png_compress_level=settings.png_compress_level,
            webp_quality=settings.webp_quality,
            jpeg_quality=settings.jpeg_quality,
        )

    def with_format(self, fmt: OutputFormat | str | None) -> OutputSettings:
        """These settings for a job that asked for `fmt` (None: the worker's default)."""
        return self if fmt is None else replace(self, format=OutputFormat(fmt))

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]


@dataclass(frozen=True, slots=True)
class ServedImage:
    """One finished picture as it is served: its bytes, their media type, and its safety flag."""

    data: bytes
    media_type: str
    nsfw: bool = False


def encode(pixels: np.ndarray, meta: Mapping[str, str], settings: OutputSettings) -> bytes:
    """A (height, width, 3) uint8 picture in the chosen format, with `meta` in it."""
    img = Image.fromarray(pixels, "RGB")
    buf = io.BytesIO()
    if settings.format is OutputFormat.PNG:
        info = PngInfo()
        for key, value in meta.items():
            info.add_text(key, value)  # an iTXt (UTF-8) chunk where the value is not Latin-1
        # Run-length zlib over PNG's filtered rows: faster than the default strategy, and smaller on
        # pictures with grain (bench/encode.py).
        img.save(
            buf,
            format="PNG",
            pnginfo=info,
            compress_level=settings.png_compress_level,
            compress_type=zlib.Z_RLE,
        )
    elif settings.format is OutputFormat.WEBP:
        img.save(buf, format="WEBP", quality=settings.webp_quality, method=WEBP_METHOD, xmp=xmp_packet(meta))
    elif settings.format is OutputFormat.WEBP_LOSSLESS:
        img.save(buf, format="WEBP", lossless=True, quality=0, method=0, xmp=xmp_packet(meta))
    else:
        # Full-resolution colour (4:4:4): chroma subsampling smears the hard colour edges generated
        # pictures have, for a size saving that matters little at these qualities.
        img.save(buf, format="JPEG", quality=settings.jpeg_quality, subsampling=0, xmp=xmp_packet(meta))
    return buf.getvalue()


def xmp_packet(meta: Mapping[str, str]) -> bytes:
    """The metadata as an XMP packet: one attribute per key in brushfire's namespace."""
    attrs = " ".join(
        f"bf:{key}={quoteattr(_XML_INVALID.sub('', value))}"
        for key, value in meta.items()
        if _XML_NAME.match(key)
    )
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:bf="{XMP_NAMESPACE}" {attrs}/></rdf:RDF></x:xmpmeta>'
    ).encode()


def read_metadata(data: bytes) -> dict[str, str]:
    """The generation metadata of a picture in any output format: PNG text chunks, or the XMP packet."""
    with Image.open(io.BytesIO(data)) as img:
        text = getattr(img, "text", None) if img.format == "PNG" else None
    return dict(text) if text is not None else read_xmp(data)


def read_xmp(data: bytes) -> dict[str, str]:
    """The metadata `xmp_packet` wrote, read back from a WebP or JPEG file's XMP (for tests and tools)."""
    import xml.etree.ElementTree as ET

    with Image.open(io.BytesIO(data)) as img:
        raw = img.info.get("xmp", b"")
    root = ET.fromstring(raw)
    desc = root.find(".//{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description")
    prefix = "{" + XMP_NAMESPACE + "}"
    attrib = desc.attrib if desc is not None else {}
    return {k.removeprefix(prefix): v for k, v in attrib.items() if k.startswith(prefix)}


def pool_size(configured: int | None = None) -> int:
    """Encoder threads: as configured, else one per core this process may use less one for the event loop
    and the engine's thread (which mostly waits on the GPU), and at least two where there are two cores."""
    if configured:
        return configured
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores, max(2, cores - 1))


def encoder_pool(settings: WorkerSettings) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=pool_size(settings.encode_threads), thread_name_prefix="encode")
