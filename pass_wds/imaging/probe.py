"""What an image file really is: its format and size from the header, whether every pixel decodes, and
re-encoding it as an upright JPEG. Used by the shard writer on every input image.

Limits are passed to each call, never set in Pillow: Pillow keeps its decompression-bomb threshold in a
module global (``PIL.Image.MAX_IMAGE_PIXELS``), which the writer used to swap per call; with several
threads (Dask workers run tasks in threads) a swap could be undone under another call's feet, or leave the
process with someone else's limit. So the pixel count is checked here, from the header, before any pixel is
decoded. Pillow's own threshold stays as it is: it still refuses images above twice its limit (~179
megapixels by default) whatever limit is passed here.

Which formats a shard may hold is the on-disk contract (:data:`pass_wds.format.samples.EXTENSIONS`); the
facts about the bytes are here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from pass_wds.errors import first_line
from pass_wds.format import reasons
from pass_wds.format.samples import EXTENSIONS
from pass_wds.imaging import jpeg
from pass_wds.imaging.orientation import orient_pil, read_orientation

__all__ = [
    "JPEG_FORMATS",
    "ImageInfo",
    "Rejected",
    "check_pixels",
    "inspect_image",
    "load_all",
    "reencode",
    "rejection",
    "sniff_header",
]

JPEG_FORMATS = ("JPEG", "MPO")
"""Pillow's names of JPEG files: the ones libjpeg can decode at a reduced DCT scale (``Image.draft``)."""


class Rejected(Exception):
    """An input that is not a usable image; carries the errors.jsonl reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageInfo:
    format: str
    ext: str
    width: int
    height: int


def check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse a header size above ``max_pixels`` as a decompression bomb (counted as Pillow counts)."""
    pixels = max(1, size[0]) * max(1, size[1])
    if pixels > max_pixels:
        raise Rejected(
            reasons.BOMB,
            f"Image size ({pixels} pixels) exceeds limit of {max_pixels} pixels, could be decompression bomb "
            "DOS attack.",
        )


def load_all(im: Image.Image, data: bytes, fmt: str) -> None:
    """Decode every pixel (raises what the decoder raises). A JPEG is first decoded at 1/8 scale: every
    entropy-coded byte is still read, which is where truncation and corruption show, but the IDCT and colour
    conversion become nearly free (~4x faster). Where that fails (e.g. lossless JPEGs cannot be scaled),
    a full decode gives the verdict."""
    if fmt not in JPEG_FORMATS:
        im.load()
        return
    try:
        im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()
    except Exception:
        Image.open(io.BytesIO(data)).load()


def inspect_image(data: bytes, *, validate: bool, max_pixels: int, reencode: bool = False) -> ImageInfo:
    """Identify the real format and size; with ``validate``, decode every pixel. Raises :class:`Rejected`.

    A format the loader does not read is ``unsupported-format`` (kept only when it will be re-encoded)."""
    if not data:
        raise Rejected(reasons.EMPTY, "0 bytes")
    if not validate:
        sniffed = sniff_header(data)
        if sniffed is not None:
            fmt, width, height = sniffed
            if width <= 0 or height <= 0:
                raise Rejected(reasons.CORRUPT, f"invalid size {width}x{height}")
            if width * height > max_pixels:  # the same rule as Pillow's open with warnings as errors
                raise Rejected(
                    reasons.BOMB, f"Image size ({width * height} pixels) exceeds limit of {max_pixels} pixels"
                )
            return ImageInfo(fmt, EXTENSIONS[fmt], width, height)
    try:
        im = Image.open(io.BytesIO(data))
        check_pixels(im.size, max_pixels)
        fmt = im.format or ""
        if fmt not in EXTENSIONS and not reencode:
            raise Rejected(
                reasons.UNSUPPORTED_FORMAT, f"{fmt or 'unknown'} images are not read by the loader"
            )
        width, height = im.size
        if width <= 0 or height <= 0:
            raise Rejected(reasons.CORRUPT, f"invalid size {width}x{height}")
        if validate:
            load_all(im, data, fmt)
    except Exception as e:
        raise rejection(e) from None
    return ImageInfo(fmt, EXTENSIONS.get(fmt, "jpg"), width, height)


def rejection(e: Exception, doing: str = "") -> Rejected:
    """The errors.jsonl verdict on what Pillow raised while opening or decoding an image: a bomb (also when
    memory ran out), not an image, or else corrupt (truncated or damaged data, decoder errors all mean
    unusable); ``doing`` prefixes the detail (e.g. ``"re-encoding failed: "``)."""
    if isinstance(e, Rejected):
        return e
    if isinstance(e, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return Rejected(reasons.BOMB, str(e))
    if isinstance(e, MemoryError):
        return Rejected(reasons.BOMB, "too large to decode")
    if isinstance(e, UnidentifiedImageError):
        return Rejected(reasons.NOT_AN_IMAGE, "not a format Pillow can identify")
    return Rejected(reasons.CORRUPT, f"{doing}{type(e).__name__}: {first_line(e)}")


def sniff_header(data: bytes) -> tuple[str, int, int] | None:
    """Format and size of a plain 8-bit JPEG from its markers, as Pillow's ``open`` reports them.

    Used without ``--validate``, where opening every image with Pillow (~60 µs, parsing every table) was the
    largest cost of a lossless repack of PASS (all JPEG). Returns None whenever Pillow might say something
    else (other formats, multi-picture, 12-bit or lossless JPEGs), and the caller falls back to Pillow.
    """
    header = jpeg.scan(data)
    return None if header is None else ("JPEG", header.width, header.height)


def reencode(
    data: bytes, *, max_side: int | None, quality: int, max_pixels: int | None = None
) -> tuple[bytes, int, int]:
    """EXIF-orient, convert to RGB, shrink so the long side is at most ``max_side``, save as JPEG. With
    ``max_pixels``, a larger image is :class:`Rejected` from its header."""
    im: Image.Image = Image.open(io.BytesIO(data))
    if max_pixels is not None:
        check_pixels(im.size, max_pixels)
    if max_side is not None and im.format == "JPEG" and max(im.size) > 2 * max_side:
        im.draft("RGB", (max_side, max_side))  # DCT-domain downscale: much faster, still ≥ the target size
    im.load()  # first: a PNG's eXIf chunk may follow its pixels
    im = orient_pil(im, read_orientation(im))
    if im.mode != "RGB":
        im = im.convert("RGB")
    w, h = im.size
    if max_side is not None and max(w, h) > max_side:
        scale = max_side / max(w, h)
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality, optimize=False, progressive=False)
    return out.getvalue(), im.size[0], im.size[1]
