"""Facts about image bytes, without torch: what the shard writer and the decoders both need to know.

* :mod:`~pass_wds.imaging.jpeg`: a JPEG's size, components and EXIF orientation from a walk over its markers
  (a few µs, where Pillow's ``open`` takes ~150).
* :mod:`~pass_wds.imaging.orientation`: the eight EXIF orientations, written once (which swap the axes, boxes
  from the upright into the stored frame, Pillow's transposes, reading the tag).
* :mod:`~pass_wds.imaging.probe`: an image's real format and size, full validation, the pixel limit (passed
  per call, never set in Pillow), re-encoding as an upright JPEG.

Which formats a shard may hold is the on-disk contract (:mod:`pass_wds.format.samples`), not an image fact.
"""

from pass_wds.imaging.jpeg import JpegHeader, scan
from pass_wds.imaging.orientation import (
    STEPS,
    Steps,
    box_to_stored,
    orient_pil,
    read_orientation,
    swaps_axes,
    upright_size,
)
from pass_wds.imaging.probe import (
    JPEG_FORMATS,
    ImageInfo,
    Rejected,
    check_pixels,
    inspect_image,
    load_all,
    reencode,
    rejection,
    sniff_header,
)

__all__ = [
    "JPEG_FORMATS",
    "STEPS",
    "ImageInfo",
    "JpegHeader",
    "Rejected",
    "Steps",
    "box_to_stored",
    "check_pixels",
    "inspect_image",
    "load_all",
    "orient_pil",
    "read_orientation",
    "reencode",
    "rejection",
    "scan",
    "sniff_header",
    "swaps_axes",
    "upright_size",
]
