"""Crop sampling in the upright frame of an image whose pixels are not decoded yet.

Sampling the crop from the header size first is what lets the decoder pick a reduced JPEG scale
(``pass_wds.decoding``): the crop is known before decoding starts.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from pass_wds.decoding import Crop

__all__ = ["GeometrySpec", "center_crop_box", "random_resized_crop_box", "sample_crop"]


class GeometrySpec(Protocol):
    crop: str
    size: int
    resize: int | None
    scale: tuple[float, float]
    ratio: tuple[float, float]
    flip_p: float
    interpolation: str


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(left, top, w, h) with torchvision ``RandomResizedCrop.get_params`` semantics: ten tries of a random
    area fraction and log-uniform aspect ratio, then a centre crop clamped to the ratio range."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (width - w) // 2, (height - h) // 2, w, h


def center_crop_box(width: int, height: int, size: int, resize: int | None) -> tuple[int, int, int, int]:
    """The region that ``Resize(resize)`` (shorter side) then ``CenterCrop(size)`` keeps, in source pixels."""
    short = min(width, height)
    factor = short / resize if resize else 1.0
    side = size * factor
    w, h = min(width, max(1, int(round(side)))), min(height, max(1, int(round(side))))
    return int(round((width - w) / 2)), int(round((height - h) / 2)), w, h


def sample_crop(spec: GeometrySpec, width: int, height: int, rng: np.random.Generator) -> Crop:
    """One view's crop. Always draws the flip coin, so the stream of draws is the same whatever ``flip_p``."""
    if spec.crop == "center":
        box = center_crop_box(width, height, spec.size, spec.resize)
    else:
        box = random_resized_crop_box(width, height, spec.scale, spec.ratio, rng)
    flip = bool(rng.random() < spec.flip_p)
    return Crop(box=box, size=(spec.size, spec.size), flip=flip, interpolation=spec.interpolation)
