"""EXIF orientation, written once: which of the eight orientations swap the axes, how a box in the upright
frame maps back into the stored frame, and how to turn stored pixels upright.

Why one table: the shard writer (re-encoding turns images upright), the worker decoder (crops are sampled in
the upright frame, cut and resized in the stored frame, and only the small output is turned) and the device
decoder (the same, on whole batches) must agree exactly, and Pillow's ``ImageOps.exif_transpose`` is the
reference all three follow. Each orientation is written as the steps that turn the stored image upright: an
optional transpose (swap rows and columns), then flips of the columns and of the rows. Everything else here
is derived from :data:`STEPS`; the torch version lives with the decoder (:func:`pass_wds.decoding.orient_and_flip`).
"""

from __future__ import annotations

from typing import NamedTuple

from PIL import Image

from pass_wds.imaging.jpeg import ORIENTATION_TAG

__all__ = [
    "STEPS",
    "UPRIGHT",
    "Steps",
    "box_to_stored",
    "orient_pil",
    "read_orientation",
    "swaps_axes",
    "upright_size",
]

UPRIGHT = 1


class Steps(NamedTuple):
    """What turns a stored image upright, in this order: ``transpose`` (out[y, x] = in[x, y]), then
    ``flip_x`` (mirror left-right) and ``flip_y`` (mirror top-bottom)."""

    transpose: bool
    flip_x: bool
    flip_y: bool


STEPS: dict[int, Steps] = {
    1: Steps(False, False, False),
    2: Steps(False, True, False),  # mirrored
    3: Steps(False, True, True),  # rotated 180°
    4: Steps(False, False, True),  # mirrored vertically
    5: Steps(True, False, False),  # transposed
    6: Steps(True, True, False),  # shown after a quarter turn clockwise
    7: Steps(True, True, True),  # transverse
    8: Steps(True, False, True),  # shown after a quarter turn counter-clockwise
}
"""The EXIF orientation tag (1..8) → the steps that turn the stored pixels upright, as ``exif_transpose``."""

# Pillow's transpose methods, each named by the steps it takes (one call instead of two or three).
_PIL_METHODS = {
    Steps(False, True, False): Image.Transpose.FLIP_LEFT_RIGHT,
    Steps(False, True, True): Image.Transpose.ROTATE_180,
    Steps(False, False, True): Image.Transpose.FLIP_TOP_BOTTOM,
    Steps(True, False, False): Image.Transpose.TRANSPOSE,
    Steps(True, True, False): Image.Transpose.ROTATE_270,
    Steps(True, True, True): Image.Transpose.TRANSVERSE,
    Steps(True, False, True): Image.Transpose.ROTATE_90,
}


def swaps_axes(orientation: int) -> bool:
    """True for the orientations whose upright image is the stored one with width and height swapped."""
    return STEPS[orientation].transpose if orientation in STEPS else False


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The upright (width, height) of an image stored as ``size`` (and the reverse: the map is its own
    inverse). Also serves (height, width) pairs, which swap alike."""
    return (size[1], size[0]) if swaps_axes(orientation) else size


def box_to_stored(
    box: tuple[int, int, int, int], orientation: int, width: int, height: int
) -> tuple[float, float, float, float]:
    """Map an upright-frame box (left, top, w, h) into the stored frame as (x0, y0, x1, y1).

    ``width``/``height`` are the upright size. The steps are undone in reverse order: the flips in the
    upright frame, then the transpose."""
    left, top, w, h = box
    x0, y0, x1, y1 = float(left), float(top), float(left + w), float(top + h)
    steps = STEPS.get(orientation, STEPS[UPRIGHT])
    if steps.flip_x:
        x0, x1 = width - x1, width - x0
    if steps.flip_y:
        y0, y1 = height - y1, height - y0
    if steps.transpose:
        return y0, x0, y1, x1
    return x0, y0, x1, y1


def orient_pil(img: Image.Image, orientation: int) -> Image.Image:
    """The upright version of a stored Pillow image (the same pixels as ``ImageOps.exif_transpose``)."""
    method = _PIL_METHODS.get(STEPS.get(orientation, STEPS[UPRIGHT]))
    return img.transpose(method) if method is not None else img


def read_orientation(img: Image.Image) -> int:
    """The orientation as ``ImageOps.exif_transpose`` reads it (EXIF, XMP or a PNG raw-profile tag); 1 when
    absent, not one of the eight, or unreadable: a damaged EXIF block never makes the pixels unusable.

    A PNG's ``eXIf`` chunk may follow its pixel data: load such an image before asking."""
    try:
        value = int(img.getexif().get(ORIENTATION_TAG, UPRIGHT))
    except Exception:  # corrupt EXIF: take the pixels as stored
        return UPRIGHT
    return value if value in STEPS else UPRIGHT
