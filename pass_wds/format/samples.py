"""What a sample holds: the image extensions written and read, and the provenance field of its JSON."""

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
    "ICO": "ico",
}


PROVENANCE = "_provenance"
RESERVED_FIELDS = frozenset({PROVENANCE})
"""Top-level names of the sample JSON that pass-wds writes itself; a metadata column may not use them."""

IMAGE_EXTS = frozenset(
    {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm", "jp2", "avif", "heic"}
)
