"""Batched JPEG decode and resized crops on the training device (``decode: device``).

Why: on a GPU node, JPEG decode is more than half of a loader worker's time per sample, while the GPU's
nvJPEG decodes a whole batch in one call. So with ``decode: device`` the workers only parse headers and
sample each view's crop and flip (from the same seeded stream as the CPU path), and ship the encoded bytes
with those parameters (:class:`EncodedBatch`, built in the worker by :func:`pack`). The device stage then

1. decodes all plain JPEGs of the batch in one ``torchvision.io.decode_jpeg(list, device=…)`` call (nvJPEG
   on CUDA, libjpeg-turbo on the CPU, so ``device="cpu"`` runs the same code);
2. cuts every view's crop for a chunk of images with one ``roi_align`` per view size: each output pixel
   averages an adaptive grid of bilinear samples over its footprint in the source (``sampling_ratio=-1``),
   which is the antialiasing a downscale needs; images are edge-padded to a common size so that samples at
   the border clamp as ``interpolate`` does;
3. applies the EXIF orientation and the flip to the small outputs, grouped by (orientation, flip).

Images that are not plain JPEGs (PNG, WebP, CMYK, 12-bit, arithmetic-coded, …) were decoded and cropped in
the worker already (:attr:`EncodedBatch.fallback_views`); a JPEG that the batched decoder rejects is decoded
here on the CPU by the worker path's own code, and one that fails there too is reported in ``bad`` so the
caller can count and substitute it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pass_wds.compat import require_torch_pair
from pass_wds.decoding.options import DEFAULT_OPTIONS, Crop, DecodeError, DecodeOptions
from pass_wds.decoding.source import open_image, orient_and_flip
from pass_wds.imaging.orientation import box_to_stored, upright_size

require_torch_pair()  # a mismatched torch/torchvision pair fails here in one line, not in torchvision's import
try:
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as _tv_decode_jpeg
    from torchvision.ops import roi_align as _roi_align
except ImportError:  # pragma: no cover - depends on the torchvision build
    _tv_decode_jpeg = None
    _roi_align = None

__all__ = ["DeviceSample", "EncodedBatch", "decode_views", "pack"]

CHUNK_PIXELS = 24_000_000  # padded source pixels per roi_align call: bounds the float32 buffer to ~290 MB


@dataclass
class DeviceSample:
    """One sample as a worker ships it: ``data`` (the encoded JPEG) with its crops, or ``views`` (uint8
    3xHxW tensors) when the worker decoded it itself."""

    crops: list[Crop]
    orientation: int = 1
    stored_size: tuple[int, int] = (0, 0)
    data: bytes | None = None
    views: list[torch.Tensor] | None = None


@dataclass
class EncodedBatch:
    """A batch for the device stage: the encoded bytes of ``rows`` in one flat uint8 tensor (one shared
    memory segment between processes instead of one per image), their stored-frame boxes and flips, and
    the worker-decoded views of the other rows. The small fields are numpy arrays, which pickle inline:
    each tensor costs a shared-memory segment (~0.3 ms) on its way out of a DataLoader worker."""

    size: int  # samples in the batch
    data: torch.Tensor  # uint8, all encoded JPEGs back to back
    offsets: np.ndarray  # int64 (len(rows) + 1,)
    rows: np.ndarray  # int64: batch rows decoded on the device
    boxes: np.ndarray  # float64 (len(rows), views, 4): x0, y0, x1, y1 in the stored frame
    flips: np.ndarray  # bool (len(rows), views)
    orientation: np.ndarray  # int64 (len(rows),)
    crops: list[list[Crop]]  # per device row, for the CPU fallback of a JPEG the batched decoder rejects
    fallback_rows: np.ndarray  # int64: rows decoded in the worker
    fallback_views: list[torch.Tensor]  # per view: uint8 (len(fallback_rows), 3, S, S); [] without any

    def encoded(self, i: int) -> torch.Tensor:
        return self.data[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def pin_memory(self) -> EncodedBatch:
        """Called by the DataLoader's pin-memory thread (``pin_memory=True``): pin what goes to the GPU."""
        return dataclasses.replace(
            self, data=self.data.pin_memory(), fallback_views=[v.pin_memory() for v in self.fallback_views]
        )


def pack(samples: Sequence[DeviceSample], sizes: Sequence[int]) -> EncodedBatch:
    """Collate the worker's :class:`DeviceSample` s into one :class:`EncodedBatch`."""
    rows = [i for i, s in enumerate(samples) if s.data is not None]
    fallback = [i for i, s in enumerate(samples) if s.data is None]
    n_views = len(sizes)
    blobs = [samples[i].data or b"" for i in rows]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    data = _new_bytes(int(offsets[-1]))
    flat = data.numpy()
    for blob, start in zip(blobs, offsets.tolist(), strict=False):
        flat[start : start + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
    box_rows, flip_rows, orientation = [], [], []
    for i in rows:
        s = samples[i]
        upright = upright_size(s.stored_size, s.orientation)
        orientation.append(s.orientation)
        box_rows.append([box_to_stored(c.box, s.orientation, *upright) for c in s.crops])
        flip_rows.append([c.flip for c in s.crops])
    boxes = np.asarray(box_rows, dtype=np.float64).reshape(len(rows), n_views, 4)
    flips = np.asarray(flip_rows, dtype=np.bool_).reshape(len(rows), n_views)
    worker_views = [samples[i].views or [] for i in fallback]
    fallback_views = (
        [torch.stack([views[v] for views in worker_views]) for v in range(n_views)] if fallback else []
    )
    return EncodedBatch(
        size=len(samples),
        data=data,
        offsets=offsets,
        rows=np.asarray(rows, dtype=np.int64),
        boxes=boxes,
        flips=flips,
        orientation=np.asarray(orientation, dtype=np.int64),
        crops=[samples[i].crops for i in rows],
        fallback_rows=np.asarray(fallback, dtype=np.int64),
        fallback_views=fallback_views,
    )


def _new_bytes(n: int) -> torch.Tensor:
    """A uint8 tensor of ``n`` bytes; in a DataLoader worker directly in shared memory (as torch's own collate
    does), so that sending the batch does not copy the encoded bytes once more."""
    if n == 0 or torch.utils.data.get_worker_info() is None:
        return torch.empty(n, dtype=torch.uint8)
    return torch.empty(0, dtype=torch.uint8).new(torch.UntypedStorage._new_shared(n))


def _decode_all(enc: EncodedBatch, device: torch.device) -> list[torch.Tensor | None]:
    """Every device row's stored-frame RGB pixels (uint8 3xHxW on ``device``), None where decoding failed.
    One batched call; only if it fails, one call per image to find the culprits."""
    if _tv_decode_jpeg is None:
        raise RuntimeError("decode='device' needs torchvision.io.decode_jpeg")
    inputs = [enc.encoded(j) for j in range(len(enc.rows))]
    if not inputs:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return list(_tv_decode_jpeg(inputs, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        out: list[torch.Tensor | None] = []
        for x in inputs:
            try:
                out.append(_tv_decode_jpeg(x, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
    return out


def _chunks(images: list[tuple[int, torch.Tensor]], budget: int) -> list[list[tuple[int, torch.Tensor]]]:
    """Consecutive groups whose padded size (count x max height x max width) stays within ``budget``."""
    groups: list[list[tuple[int, torch.Tensor]]] = []
    cur: list[tuple[int, torch.Tensor]] = []
    mh = mw = 0
    for item in images:
        h, w = item[1].shape[1], item[1].shape[2]
        nh, nw = max(mh, h), max(mw, w)
        if cur and (len(cur) + 1) * nh * nw > budget:
            groups.append(cur)
            cur, nh, nw = [], h, w
        cur.append(item)
        mh, mw = nh, nw
    if cur:
        groups.append(cur)
    return groups


def _padded(group: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """float32 N x 3 x Hmax x Wmax, each image edge-replicated to the common size."""
    mh = max(t.shape[1] for _, t in group)
    mw = max(t.shape[2] for _, t in group)
    out = torch.empty((len(group), 3, mh, mw), dtype=torch.float32, device=group[0][1].device)
    for k, (_, t) in enumerate(group):
        h, w = t.shape[1], t.shape[2]
        out[k, :, :h, :w].copy_(t)
        if h < mh:
            out[k, :, h:, :w].copy_(out[k, :, h - 1 : h, :w].expand(-1, mh - h, -1))
        if w < mw:
            out[k, :, :, w:].copy_(out[k, :, :, w - 1 : w].expand(-1, -1, mw - w))
    return out


def decode_views(
    enc: EncodedBatch,
    sizes: Sequence[int],
    device: torch.device | str,
    options: DecodeOptions = DEFAULT_OPTIONS,
    chunk_pixels: int = CHUNK_PIXELS,
) -> tuple[list[torch.Tensor], list[tuple[int, DecodeError]]]:
    """All views of the batch as float32 B x 3 x S x S on ``device`` (values 0..255, rounded as the uint8
    CPU path is), and the rows that could not be decoded at all as ``(row, error)`` (their views are
    zeros: the caller substitutes them)."""
    if _roi_align is None:
        raise RuntimeError("decode='device' needs torchvision.ops.roi_align")
    dev = torch.device(device)
    out = [torch.zeros((enc.size, 3, s, s), dtype=torch.float32, device=dev) for s in sizes]
    bad: list[tuple[int, DecodeError]] = []
    if len(enc.fallback_rows):
        frows = torch.from_numpy(enc.fallback_rows).to(dev)
        for v, views in enumerate(enc.fallback_views):
            out[v].index_copy_(0, frows, views.to(dev, non_blocking=True).to(torch.float32))
    decoded = _decode_all(enc, dev)
    good: list[tuple[int, torch.Tensor]] = []
    for j, img in enumerate(decoded):
        row = int(enc.rows[j])
        if img is not None:
            good.append((j, img))
            continue
        # The batched decoder refused it: the worker path's CPU decode, with the same crops.
        try:
            cpu_views = open_image(bytes(enc.encoded(j).numpy()), options).crops(enc.crops[j])
        except DecodeError as e:
            bad.append((row, e))
            continue
        for v, view in enumerate(cpu_views):
            out[v][row].copy_(view.to(dev).to(torch.float32))
    for group in _chunks(good, chunk_pixels):
        padded = _padded(group)
        js = np.asarray([j for j, _ in group], dtype=np.int64)
        rows = torch.from_numpy(enc.rows[js])
        for v, size in enumerate(sizes):
            boxes = torch.from_numpy(
                np.concatenate([np.arange(len(group), dtype=np.float64)[:, None], enc.boxes[js, v]], axis=1)
            ).to(dev, torch.float32)
            crops = _roi_align(
                padded, boxes, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True
            )
            crops = crops.round_().clamp_(0, 255)
            orient = torch.from_numpy(enc.orientation[js])
            flips = torch.from_numpy(enc.flips[js, v])
            for o, f in {(int(o), bool(f)) for o, f in zip(orient.tolist(), flips.tolist(), strict=True)}:
                sel = ((orient == o) & (flips == f)).nonzero().flatten()
                part = crops if len(sel) == len(group) else crops[sel.to(dev)]
                out[v].index_copy_(0, rows[sel].to(dev), orient_and_flip(part, o, f))
    return out, bad
