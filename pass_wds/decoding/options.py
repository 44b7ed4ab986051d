"""How to decode, and how decoding fails: the options, the error, and the crop request (no torch).

These are what a recipe or a config checks before any worker starts, so they import neither torch nor
Pillow: a YAML check or a ``--help`` must not pay for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pass_wds.errors import PassWdsError

try:  # libjpeg-turbo through its TurboJPEG API, bundled in the wheel: no Pillow parse, any M/8 DCT scale.
    import simplejpeg
except ImportError:  # optional (the ``fast`` extra); the accurate path then uses torchvision or Pillow
    simplejpeg = None

__all__ = ["DEFAULT_OPTIONS", "JPEG_MODES", "Crop", "DecodeError", "DecodeOptions", "simplejpeg"]

JPEG_MODES = ("accurate", "fast")


class DecodeError(PassWdsError):
    """An image could not be decoded; ``reason`` is a word of :mod:`pass_wds.format.reasons`, ``detail`` the
    underlying message."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling between DataLoader worker processes
        return (DecodeError, (self.reason, self.detail))


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode. ``max_pixels`` refuses bombs (Pillow's default limit); ``jpeg_backend`` is ``auto``
    (simplejpeg when installed, else torchvision, for plain RGB/gray JPEG; PIL otherwise), ``pil`` or
    ``torchvision``. ``jpeg_mode``: ``accurate`` (libjpeg's default islow IDCT and fancy upsampling, DCT
    scales 1/2, 1/4, 1/8 as Pillow picks them: the same pixels whichever backend decodes) or ``fast`` (fast
    integer IDCT, plain upsampling, the smallest of the eight M/8 DCT scales that the crops allow; needs
    simplejpeg; see docs/augment.md for its measured pixel difference)."""

    max_pixels: int = 89_478_485
    alpha_background: tuple[int, int, int] = (255, 255, 255)
    draft: bool = True
    jpeg_backend: str = "auto"
    jpeg_mode: str = "accurate"

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if len(self.alpha_background) != 3 or not all(0 <= int(c) <= 255 for c in self.alpha_background):
            raise ValueError(
                f"alpha_background must be three values in 0..255, got {self.alpha_background!r}"
            )
        if self.jpeg_backend not in ("auto", "pil", "torchvision"):
            raise ValueError(f"jpeg_backend must be auto, pil or torchvision, got {self.jpeg_backend!r}")
        if self.jpeg_mode not in JPEG_MODES:
            raise ValueError(f"jpeg_mode must be accurate or fast, got {self.jpeg_mode!r}")
        if self.jpeg_mode == "fast" and self.jpeg_backend != "auto":
            raise ValueError(
                f"jpeg_mode='fast' decodes with simplejpeg; jpeg_backend={self.jpeg_backend!r} cannot"
            )
        if self.jpeg_mode == "fast" and simplejpeg is None:
            raise ValueError(
                "jpeg_mode='fast' needs the simplejpeg package (pip install 'pass-wds[fast]' or simplejpeg)"
            )


DEFAULT_OPTIONS = DecodeOptions()


@dataclass(frozen=True)
class Crop:
    """One output view: ``box`` = (left, top, width, height) in the upright frame of the source image,
    ``size`` = (height, width) of the output, ``flip`` = mirror the output left-right."""

    box: tuple[int, int, int, int]
    size: tuple[int, int]
    flip: bool = False
    interpolation: str = "bilinear"
