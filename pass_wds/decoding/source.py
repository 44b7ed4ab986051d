"""Image bytes → upright RGB uint8 pixels, fast and safe.

Why this module exists: a training loader decodes every sample every epoch, so decoding is the floor of the
input pipeline's cost, and a single bad file must never crash or stall a worker. The design:

* ``open_image`` parses only the header (a few µs for plain JPEGs, see :mod:`pass_wds.imaging.jpeg`;
  Pillow otherwise): format, stored size, EXIF orientation, and hence the *upright* (oriented) size. Augmentation
  samples its crops in that upright frame *before* any pixel is decoded.
* ``SourceImage.crops`` then decodes once and cuts every requested crop from the same pixels:

  - a JPEG whose crops all tolerate it is decoded at 1/2, 1/4 or 1/8 scale by libjpeg-turbo's DCT scaling
    (PIL ``Image.draft``), chosen so that every crop region still has at least its output resolution;
  - with simplejpeg installed, plain RGB/grayscale JPEGs are decoded by it at that scale straight from the bytes
    (libjpeg-turbo's TurboJPEG API: no Pillow header parse, no copy of the bytes; the same pixels);
    ``DecodeOptions(jpeg_mode="fast")`` switches it to the fast integer IDCT, plain upsampling and any M/8 scale;
  - otherwise RGB/grayscale JPEGs go through ``torchvision.io.decode_jpeg`` (libjpeg-turbo straight into a
    tensor, faster than PIL here), everything else through PIL;
  - each crop is mapped from the upright frame into the stored frame, resized there with antialiasing
    (``torch.nn.functional.interpolate`` on uint8, several times faster than ``PIL.Image.resize``), and only the
    small output is rotated/flipped upright — never the full image (the orientation rules are
    :mod:`pass_wds.imaging.orientation`'s; :func:`orient_and_flip` applies them to tensors).

* Colour conversion: CMYK (including Adobe-inverted), grayscale, palette, 1-bit, 16-bit and float modes become
  8-bit RGB; transparent images (RGBA, LA, PA, palette or RGB with a ``tRNS`` transparency) are composited onto
  ``DecodeOptions.alpha_background`` (white by default, as a browser shows them). ICC profiles are not applied:
  pixel values are taken as sRGB. Multi-frame files (GIF, APNG, animated WebP, MPO, multi-page TIFF) give their
  first frame.
* :mod:`pass_wds.decoding.device` decodes whole batches on the training device instead (``decode: device``).
* Every failure is a :class:`DecodeError` with a short machine-readable ``reason`` from the one vocabulary of
  :mod:`pass_wds.format.reasons` (``empty``, ``not-an-image``, ``decompression-bomb``, ``truncated``,
  ``corrupt``: the words ``errors.jsonl`` and ``loader.stats`` use) and the underlying message. Decompression
  bombs are refused from the header, before any allocation.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from pass_wds.compat import require_torch_pair
from pass_wds.decoding.options import DEFAULT_OPTIONS, Crop, DecodeError, DecodeOptions
from pass_wds.decoding.options import simplejpeg as _simplejpeg
from pass_wds.format import reasons
from pass_wds.imaging import jpeg
from pass_wds.imaging.orientation import (
    STEPS,
    UPRIGHT,
    box_to_stored,
    orient_pil,
    read_orientation,
    upright_size,
)
from pass_wds.imaging.probe import JPEG_FORMATS

require_torch_pair()  # a mismatched torch/torchvision pair fails here in one line, not in torchvision's import
try:  # torchvision's JPEG decoder is deprecated from 0.29 on but still the fastest path here.
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as _tv_decode_jpeg
except ImportError:  # pragma: no cover - depends on the torchvision build
    _tv_decode_jpeg = None

__all__ = ["SourceImage", "decode_rgb", "decode_tensor", "open_image", "orient_and_flip"]

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _classify(exc: BaseException) -> DecodeError:
    msg = str(exc) or type(exc).__name__
    low = msg.lower()
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return DecodeError(reasons.BOMB, msg)
    if isinstance(exc, UnidentifiedImageError):
        return DecodeError(reasons.NOT_AN_IMAGE, msg)
    if "truncated" in low or "premature end" in low:
        return DecodeError(reasons.TRUNCATED, msg)
    if isinstance(exc, MemoryError):
        return DecodeError(reasons.BOMB, f"out of memory while decoding: {msg}")
    return DecodeError(reasons.CORRUPT, f"{type(exc).__name__}: {msg}")


def _check_size(width: int, height: int, options: DecodeOptions) -> None:
    if width < 1 or height < 1:
        raise DecodeError(reasons.CORRUPT, f"image has zero size {width}x{height}")
    if width * height > options.max_pixels:
        raise DecodeError(
            reasons.BOMB,
            f"{width}x{height} = {width * height} pixels exceeds max_pixels={options.max_pixels}",
        )


class SourceImage:
    """An opened image whose header is parsed but whose pixels are not decoded yet.

    ``width``/``height`` are the upright (EXIF-oriented) size; crops are expressed in that frame.
    """

    def __init__(self, data: bytes, options: DecodeOptions = DEFAULT_OPTIONS) -> None:
        if not data:
            raise DecodeError(reasons.EMPTY, "zero-byte image")
        self._data = data
        self.options = options
        self._img: Image.Image | None = None
        header = jpeg.scan(data)
        # plain: an 8-bit Huffman JPEG (baseline or progressive) with 1 or 3 components, the kind that
        # libjpeg-turbo's TurboJPEG API and nvJPEG decode to RGB directly.
        self.plain_jpeg = header is not None and header.components in (1, 3)
        if header is not None and header.components in (1, 3) and header.orientation is not None:
            # A plain RGB or grayscale JPEG: its markers say all Pillow would (see imaging.jpeg), for ~5 µs
            # instead of ~150 µs; Pillow opens it only if it must decode it (reduced-size or fallback paths).
            stored_w, stored_h = header.width, header.height
            self.format, self.mode = "JPEG", "L" if header.components == 1 else "RGB"
            self.orientation = header.orientation if header.orientation in STEPS else UPRIGHT
            _check_size(stored_w, stored_h, options)
        else:
            img = self._open_pil(first=True)
            stored_w, stored_h = img.size
            self.format = img.format or "unknown"
            self.mode = img.mode
        self.stored_size = (stored_w, stored_h)
        self.width, self.height = upright_size(self.stored_size, self.orientation)

    def _open_pil(self, first: bool = False) -> Image.Image:
        """Open with Pillow (header only); on the first open also read the orientation and check the size."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # EXIF/MPO chatter; bombs are checked below against our limit
                img = Image.open(io.BytesIO(self._data))
                if first:
                    _check_size(*img.size, self.options)
                    if img.format == "PNG":
                        # PNG has no reduced decode, and its eXIf chunk may follow the pixel data: load now so
                        # that the orientation is known before crops are sampled.
                        img.load()
                    self.orientation = read_orientation(img)
        except DecodeError:
            raise
        except Exception as e:
            raise _classify(e) from None
        self._img = img
        return img

    @property
    def size(self) -> tuple[int, int]:
        """Upright (width, height)."""
        return self.width, self.height

    # -- decoding -----------------------------------------------------------------------------------------
    def _pil_pixels(self, draft_size: tuple[int, int] | None) -> np.ndarray:
        img = self._img if self._img is not None else self._open_pil()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if draft_size is not None and self.format in JPEG_FORMATS:
                    img.draft("RGB", draft_size)
                img.load()
                return _to_rgb_array(img, self.options.alpha_background)
        except DecodeError:
            raise
        except Exception as e:
            raise _classify(e) from None

    def decode_stored(self, min_scale: float = 1.0) -> torch.Tensor:
        """Decode to uint8 3xHxW in the *stored* frame, possibly reduced (never below ``min_scale`` of the
        stored size when a DCT-scaled decode is possible). Each SourceImage decodes at most once."""
        return self._decode_stored(min_scale)[0]

    def _decode_stored(self, min_scale: float) -> tuple[torch.Tensor, bool]:
        """:meth:`decode_stored`, and whether the pixels own their memory (see :func:`_hwc_to_chw`)."""
        opts = self.options
        sw, sh = self.stored_size
        if self.plain_jpeg and _simplejpeg is not None and opts.jpeg_backend == "auto":
            pixels = self._turbo_pixels(min_scale)
            if pixels is not None:
                return pixels
        use_draft = opts.draft and self.format in JPEG_FORMATS and min_scale <= 0.5
        if use_draft:
            req = (max(1, math.ceil(sw * min_scale)), max(1, math.ceil(sh * min_scale)))
            try:
                return _hwc_to_chw(self._pil_pixels(req))
            except DecodeError as e:
                if e.reason != reasons.CORRUPT:
                    raise
                # Some JPEG variants (lossless SOF3) cannot be DCT-scaled: decode them at full size.
                self._img = None  # reopen: the failed draft load leaves the first image unusable
        if (
            _tv_decode_jpeg is not None
            and opts.jpeg_backend != "pil"
            and self.format in JPEG_FORMATS
            and self.mode in ("RGB", "L")
        ):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pixels = _tv_decode_jpeg(
                        torch.frombuffer(bytearray(self._data), dtype=torch.uint8), mode=ImageReadMode.RGB
                    )
                    return pixels, True
            except RuntimeError:
                pass  # let PIL decode it or produce the precise error message
        return _hwc_to_chw(self._pil_pixels(None))

    def _turbo_pixels(self, min_scale: float) -> tuple[torch.Tensor, bool] | None:
        """simplejpeg straight from the bytes (no Pillow parse, no copy into a tensor); None when it refuses
        (damaged data), so that the other decoders give the usual error or result.

        ``accurate`` asks for exactly the scale Pillow's ``draft`` would pick (the largest of 1/8, 1/4, 1/2
        that keeps the request), so its pixels are identical to the Pillow/torchvision path's; ``fast`` takes
        the smallest of all eight M/8 scales that still covers ``min_scale``."""
        opts = self.options
        sw, sh = self.stored_size
        fast = opts.jpeg_mode == "fast"
        if not opts.draft or min_scale >= 1.0:
            want_w, want_h = sw, sh
        elif fast:
            want_w, want_h = max(1, math.ceil(sw * min_scale)), max(1, math.ceil(sh * min_scale))
        else:
            req_w, req_h = max(1, math.ceil(sw * min_scale)), max(1, math.ceil(sh * min_scale))
            limit = min(sw // req_w, sh // req_h) if min_scale <= 0.5 else 1
            a = next(a for a in (8, 4, 2, 1) if limit >= a)
            want_w, want_h = -(-sw // a), -(-sh // a)
        try:
            arr = _simplejpeg.decode_jpeg(
                self._data, "RGB", fast, fast, min_height=want_h, min_width=want_w, strict=True
            )
        except ValueError:
            return None
        if not fast and (arr.shape[1] != want_w or arr.shape[0] != want_h):
            return None  # a scale Pillow would not pick (tiny images): keep the reference decoders' pixels
        return _hwc_to_chw(arr)

    def crops(self, crops: Sequence[Crop]) -> list[torch.Tensor]:
        """Decode once and return each crop as a contiguous uint8 3xHxW tensor in the upright frame."""
        if not crops:
            return []
        sw, sh = self.stored_size
        # The smallest decode scale that keeps every crop at >= its output resolution.
        need = 0.0
        stored_boxes = []
        for c in crops:
            x0, y0, x1, y1 = box_to_stored(c.box, self.orientation, self.width, self.height)
            stored_boxes.append((x0, y0, x1, y1))
            oh, ow = upright_size(c.size, self.orientation)
            need = max(need, ow / max(x1 - x0, 1e-9), oh / max(y1 - y0, 1e-9))
        pixels, owned = self._decode_stored(min(need, 1.0))
        dh, dw = pixels.shape[1], pixels.shape[2]
        sx, sy = dw / sw, dh / sh
        out = []
        for c, (x0, y0, x1, y1) in zip(crops, stored_boxes, strict=True):
            ix0 = min(max(int(round(x0 * sx)), 0), dw - 1)
            iy0 = min(max(int(round(y0 * sy)), 0), dh - 1)
            ix1 = max(min(int(round(x1 * sx)), dw), ix0 + 1)
            iy1 = max(min(int(round(y1 * sy)), dh), iy0 + 1)
            oh, ow = upright_size(c.size, self.orientation)
            whole = (ix0, iy0, ix1, iy1, oh, ow) == (0, 0, dw, dh, dh, dw)
            if whole and len(crops) == 1 and owned:
                # The whole decoded image at its own size: the decoder's fresh, writable buffer is the result
                # (a copy would be one more full pass over the pixels).
                resized = pixels
            else:
                resized = _resize(pixels[:, iy0:iy1, ix0:ix1], (oh, ow), c.interpolation)
            out.append(orient_and_flip(resized, self.orientation, c.flip))
        return out

    def full(self) -> torch.Tensor:
        """The whole upright image as uint8 3xHxW at full resolution."""
        return self.crops([Crop((0, 0, self.width, self.height), (self.height, self.width))])[0]


def _hwc_to_chw(arr: np.ndarray) -> tuple[torch.Tensor, bool]:
    """Zero-copy HxWx3 array → 3xHxW view, and whether it owns its memory: True on a writable buffer of
    its own (simplejpeg's), False on a read-only array (Pillow's), which nothing may write to, so a caller
    that hands the pixels out must copy them."""
    if arr.flags.writeable:  # simplejpeg's: no warning to silence (catch_warnings costs ~10 µs)
        return torch.from_numpy(arr).permute(2, 0, 1), True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.from_numpy(arr).permute(2, 0, 1), False


def orient_and_flip(x: torch.Tensor, orientation: int, flip: bool = False) -> torch.Tensor:
    """Turn stored pixels upright (:data:`pass_wds.imaging.orientation.STEPS`, as PIL's ``exif_transpose``)
    and optionally mirror the result left-right, on the last two (H, W) dims, so one definition serves a
    CHW view in the worker and an NCHW group on the device. The mirror is folded into the orientation's own
    flips: at most one copy.

    The result may be a strided view (e.g. channels-last); ``torch.stack`` at collation makes the batch
    contiguous in the same copy, so making each view contiguous here would only add a pass."""
    steps = STEPS.get(orientation, STEPS[UPRIGHT])
    if steps.transpose:
        x = x.transpose(-2, -1)
    dims = [d for d, on in ((-2, steps.flip_y), (-1, steps.flip_x != flip)) if on]
    return x.flip(dims) if dims else x


def _resize(region: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """Antialiased resize of a uint8 CHW region (torch's uint8 kernels; bilinear or bicubic)."""
    if tuple(region.shape[1:]) == tuple(size):
        return region.clone()  # own the memory: never a view of the whole decoded image (or of PIL's buffer)
    batch = region.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    mode = "bicubic" if interpolation == "bicubic" else "bilinear"
    return F.interpolate(batch, size=size, mode=mode, antialias=True, align_corners=False)[0]


def _to_rgb_array(img: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """Loaded PIL image of any mode → HxWx3 uint8 RGB (see the module docstring for the rules)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return np.asarray(img)
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img)
        if mode == "I" and arr.size and int(arr.max()) <= 255 and int(arr.min()) >= 0:
            gray = arr.astype(np.uint8)  # an 8-bit image stored as 32-bit ints
        else:
            gray = (np.clip(arr.astype(np.int64), 0, 65535) // 257).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 1.0
        gray = np.clip(np.nan_to_num(arr) * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("P", "L", "RGB", "1") and "transparency" in img.info or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[:, :, 3:4]
        bg = np.asarray(background, dtype=np.uint16).reshape(1, 1, 3)
        rgb = (rgba[:, :, :3] * alpha + bg * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)
    return np.asarray(img.convert("RGB"))


def open_image(data: bytes, options: DecodeOptions = DEFAULT_OPTIONS) -> SourceImage:
    """Parse the header of an encoded image (no pixel decoding); raises :class:`DecodeError`."""
    return SourceImage(data, options)


def decode_tensor(data: bytes, options: DecodeOptions = DEFAULT_OPTIONS) -> torch.Tensor:
    """Decode to an upright uint8 3xHxW tensor at full resolution."""
    return open_image(data, options).full()


def decode_rgb(
    data: bytes, *, draft: tuple[int, int] | None = None, options: DecodeOptions = DEFAULT_OPTIONS
) -> Image.Image:
    """Decode to an upright RGB PIL image (PIL path, for user transforms that expect PIL).

    ``draft`` = (width, height) in the upright frame: a JPEG may then be decoded at a reduced DCT scale whose
    result is still at least that size in both dimensions.
    """
    src = open_image(data, options)
    req = None
    if draft is not None and options.draft:
        dw, dh = upright_size(draft, src.orientation)
        req = (max(1, int(dw)), max(1, int(dh)))
    arr = src._pil_pixels(req)
    img = Image.fromarray(arr, "RGB")
    return orient_pil(img, src.orientation)
