"""Image bytes → upright RGB uint8 pixels: in the loader's workers (:mod:`~pass_wds.decoding.source`) or
batched on the training device (:mod:`~pass_wds.decoding.device`); the options, the error and the crop
request in :mod:`~pass_wds.decoding.options`.

This package only re-exports, lazily: ``DecodeOptions``, ``DecodeError`` and ``Crop`` (and the modules under
``pass_wds.decoding.options``) import without torch, so a config check or the CLI does not pay for it; the
decoders import torch when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pass_wds.decoding.options import DEFAULT_OPTIONS, JPEG_MODES, Crop, DecodeError, DecodeOptions
    from pass_wds.decoding.source import SourceImage, decode_rgb, decode_tensor, open_image, orient_and_flip

_HOMES = {
    "DEFAULT_OPTIONS": "pass_wds.decoding.options",
    "JPEG_MODES": "pass_wds.decoding.options",
    "Crop": "pass_wds.decoding.options",
    "DecodeError": "pass_wds.decoding.options",
    "DecodeOptions": "pass_wds.decoding.options",
    "SourceImage": "pass_wds.decoding.source",
    "decode_rgb": "pass_wds.decoding.source",
    "decode_tensor": "pass_wds.decoding.source",
    "open_image": "pass_wds.decoding.source",
    "orient_and_flip": "pass_wds.decoding.source",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'pass_wds.decoding' has no attribute {name!r}")


__all__ = [
    "DEFAULT_OPTIONS",
    "JPEG_MODES",
    "Crop",
    "DecodeError",
    "DecodeOptions",
    "SourceImage",
    "decode_rgb",
    "decode_tensor",
    "open_image",
    "orient_and_flip",
]
