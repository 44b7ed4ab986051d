"""What a sample holds: the image formats written and read, and the provenance field of its JSON."""

from __future__ import annotations

import zlib
from typing import Any

EXTENSIONS = {
    "JPEG": "jpg",
    "MPO": "jpg",  # a JPEG with extra frames; every JPEG decoder reads the first
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "TIFF": "tif",
    "BMP": "bmp",
    "JPEG2000": "jp2",
    "AVIF": "avif",
    "HEIF": "heic",
    "PPM": "ppm",
}
"""The one list of image formats (Pillow's name → the extension written). make-shards keeps exactly these
(the rest is rejected as ``unsupported-format`` unless re-encoded to JPEG) and the loader reads exactly
these, so no written sample is skipped at every epoch."""

EXTENSION_ALIASES = frozenset({"jpeg", "tiff", "pgm", "pbm"})
"""Other names of the same formats, as other tools write them in foreign shards."""


PROVENANCE = "_provenance"
RESERVED_FIELDS = frozenset({PROVENANCE})
CHECKSUM = "crc32"
"""Field of ``_provenance``: CRC-32 of the stored image bytes as 8 hex digits (written by make-shards)."""


def image_checksum(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


def checksum_problem(image: bytes, meta: dict[str, Any]) -> str | None:
    """Why ``image`` is not the image make-shards stored for this sample JSON, or None. Samples without a
    recorded checksum (foreign shards, older outputs) pass."""
    prov = meta.get(PROVENANCE)
    if not isinstance(prov, dict):
        return None
    expected = prov.get(CHECKSUM)
    if isinstance(prov.get("bytes"), int) and prov["bytes"] != len(image):
        return f"image is {len(image)} bytes, make-shards stored {prov['bytes']}"
    if isinstance(expected, str) and image_checksum(image) != expected:
        return f"image bytes do not match the crc32 recorded by make-shards ({expected})"
    return None


"""Top-level names of the sample JSON that pass-wds writes itself; a metadata column may not use them."""

IMAGE_EXTS = frozenset(EXTENSIONS.values()) | EXTENSION_ALIASES
"""Member extensions the loader decodes as the image of a sample."""


_ROW_END = ',"' + PROVENANCE + '":'


def sample_row(raw: bytes) -> str | None:
    """The metadata row inside a sample JSON that make-shards wrote, exactly as it was serialised (``"a":1``),
    or None when the sample has no row. ``_provenance`` is always the last field, and its name cannot occur
    unescaped inside a JSON string, so the row ends where that field begins."""
    text = raw.decode("utf-8")
    cut = text.rfind(_ROW_END)
    if cut > 0 and text.startswith("{"):
        return text[1:cut]
    if text.startswith("{" + _ROW_END[1:]):
        return None
    raise ValueError("not a sample JSON written by make-shards (no trailing _provenance field)")


def with_row(raw: bytes, row: str | None) -> bytes:
    """The same sample JSON with another metadata row (``make-shards update --refresh-metadata``): the
    ``_provenance`` field is kept byte for byte."""
    text = raw.decode("utf-8")
    old = sample_row(raw)
    tail = text[1 + (len(old) + 1 if old is not None else 0) :]
    return ("{" + (f"{row}," if row else "") + tail).encode("utf-8")
