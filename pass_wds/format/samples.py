"""What a sample holds: the image formats written and read, and the provenance field of its JSON."""

from __future__ import annotations

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
"""Top-level names of the sample JSON that pass-wds writes itself; a metadata column may not use them."""

IMAGE_EXTS = frozenset(EXTENSIONS.values()) | EXTENSION_ALIASES
"""Member extensions the loader decodes as the image of a sample."""
