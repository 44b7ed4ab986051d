"""Per-sample colour augmentation as batched tensor ops (GPU when present, CPU otherwise).

Why fused: torchvision's ``ColorJitter`` on PIL images runs four full-image passes (each with a clamp and,
for hue, an RGB→HSV→RGB round trip) and its ``GaussianBlur(23)`` a dense 2-D convolution: together about
10 ms per 224-px view on one core. Here

* brightness, contrast, saturation and hue are each an affine map of RGB, so their composition in the
  sampled random order (as ``ColorJitter`` does), followed by the optional grayscale, is ONE 3x4 matrix per
  sample, applied with one batched matmul (the approach of NVIDIA DALI). Contrast blends towards the mean
  gray level of the image at that point, which is the same affine map applied to the image's mean colour, so
  it needs only the per-image mean. Hue is a rotation of the chroma plane in YIQ space (DALI's method; an
  approximation of torchvision's HSV hue shift). Unlike torchvision there is no clamp between the four steps.
* Gaussian blur is separable (two 1-D passes) and the kernel is cut at 4 sigma (weights beyond are below
  3e-4 of the peak), capped at the configured kernel size; only the samples that drew a blur are blurred.
* Solarize and normalisation are elementwise.

Random parameters are drawn with numpy from the caller's generator (a few numbers per sample), so results
are deterministic given the generator and identical on CPU and GPU up to float rounding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ColourParams",
    "ColourSpec",
    "apply_colour",
    "colour_matrices",
    "gaussian_blur",
    "normalize",
    "sample_colour_params",
]

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2 luma)
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.59590059, -0.27455667, -0.32134392], [0.21153661, -0.52273617, 0.31119955]],
    dtype=np.float64,
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


class ColourSpec(Protocol):
    """The colour fields of a view config (see ``pass_wds.augment.recipes.ViewConfig``)."""

    jitter_p: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale_p: float
    blur_p: float
    blur_sigma: tuple[float, float]
    blur_kernel: int
    solarize_p: float
    solarize_threshold: float


@dataclass
class ColourParams:
    """Per-sample random colour parameters for ``n`` samples (numpy arrays of length n)."""

    jitter: np.ndarray  # bool: colour jitter applied
    factors: np.ndarray  # (n, 4) float: brightness, contrast, saturation factors and hue shift
    order: np.ndarray  # (n, 4) int: permutation of the four jitter operations
    gray: np.ndarray  # bool
    blur: np.ndarray  # bool
    sigma: np.ndarray  # float
    solarize: np.ndarray  # bool

    @property
    def n(self) -> int:
        return len(self.jitter)

    def subset(self, sl: slice) -> ColourParams:
        return ColourParams(*(getattr(self, f.name)[sl] for f in dataclasses.fields(self)))

    @staticmethod
    def concat(parts: Sequence[ColourParams]) -> ColourParams:
        return ColourParams(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(ColourParams))
        )

    @property
    def any_matrix(self) -> bool:
        return bool(self.jitter.any() or self.gray.any())


def _factor_range(strength: float) -> tuple[float, float]:
    return max(0.0, 1.0 - strength), 1.0 + strength


def sample_colour_params(spec: ColourSpec, n: int, rng: np.random.Generator) -> ColourParams:
    """Draw the parameters for n samples. The number of draws does not depend on the probabilities, so
    changing one probability does not reshuffle the other parameters."""
    u = rng.random((n, 12))
    jitter = u[:, 0] < spec.jitter_p
    factors = np.empty((n, 4), dtype=np.float64)
    for j, strength in enumerate((spec.brightness, spec.contrast, spec.saturation)):
        lo, hi = _factor_range(strength)
        factors[:, j] = lo + (hi - lo) * u[:, 1 + j]
    factors[:, 3] = (2.0 * u[:, 4] - 1.0) * spec.hue
    order = np.argsort(u[:, 5:9], axis=1)
    gray = u[:, 9] < spec.grayscale_p
    lo_s, hi_s = spec.blur_sigma
    blur = (u[:, 10] < spec.blur_p) & (spec.blur_kernel > 1)
    sigma = lo_s + (hi_s - lo_s) * rng.random(n)
    solarize = u[:, 11] < spec.solarize_p
    return ColourParams(jitter, factors, order, gray, blur, sigma, solarize)


def colour_matrices(params: ColourParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (L, T), each (n, 3, 3) float32: jitter in each sample's order, then grayscale, is the map
    ``x -> L @ x + T @ mean(x)``.

    Every step is linear except contrast, which adds ``(1 - c) * gray(mean of the current image)``; the
    current mean is itself ``(L + T) @ mean(x)``, so the translation stays linear in the input mean and the
    whole composition is known before the pixels are seen (no device round trip).
    """
    n = params.n
    eye = np.eye(3)
    g_rows = np.tile(np.asarray(GRAY_WEIGHTS), (3, 1))  # x -> (g.x, g.x, g.x)
    f = params.factors
    b, c, s = f[:, 0, None, None], f[:, 1, None, None], f[:, 2, None, None]
    theta = -2.0 * np.pi * f[:, 3]
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = np.cos(theta), -np.sin(theta)
    rot[:, 2, 1], rot[:, 2, 2] = np.sin(theta), np.cos(theta)
    steps = np.empty((n, 4, 3, 3))
    steps[:, 0] = b * eye  # brightness: blend with black
    steps[:, 1] = c * eye  # contrast: linear part (its translation is added below)
    steps[:, 2] = s * eye + (1 - s) * g_rows  # saturation: blend with the gray image
    steps[:, 3] = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ  # hue: chroma rotation in YIQ
    rows = np.arange(n)
    lin = np.broadcast_to(eye, (n, 3, 3))
    trans = np.zeros((n, 3, 3))
    for k in range(4):
        op = params.order[:, k]
        m = steps[rows, op]
        shift = (op == 1)[:, None, None] * (1 - c) * (g_rows @ (lin + trans))
        lin, trans = m @ lin, m @ trans + shift
    on = params.jitter[:, None, None]
    lin, trans = np.where(on, lin, eye), np.where(on, trans, 0.0)
    gray = params.gray[:, None, None]
    lin = np.where(gray, g_rows @ lin, lin)
    trans = np.where(gray, g_rows @ trans, trans)
    return lin.astype(np.float32), trans.astype(np.float32)


def _gaussian_kernels(sigma: np.ndarray, radius: int) -> np.ndarray:
    """(n, 2 radius + 1) kernels, each cut at its own 4 sigma: a sample's blur is then the same whatever
    other samples share its batch (the common radius only adds exact zeros)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    k[np.abs(t)[None, :] > np.ceil(4.0 * sigma)[:, None]] = 0.0
    return (k / k.sum(axis=1, keepdims=True)).astype(np.float32)


def gaussian_blur(
    x: torch.Tensor, sigma: np.ndarray, kernel_size: int, *, method: str = "auto"
) -> torch.Tensor:
    """Separable Gaussian blur of float (n, C, H, W) with a per-sample sigma and reflect padding (as
    torchvision's ``gaussian_blur``). Kernel cut at 4 sigma, capped at ``kernel_size``.

    On CUDA two grouped convolutions; on the CPU a sum of shifted slices (``addcmul``), which is several
    times faster there than PyTorch's depthwise convolution for these sizes. ``method`` = ``conv`` or
    ``shift`` forces one (for tests).
    """
    n, ch, hgt, wid = x.shape
    radius = min(kernel_size // 2, math.ceil(4.0 * float(np.max(sigma))), hgt - 1, wid - 1)
    if radius < 1 or n == 0:
        return x
    k = torch.from_numpy(_gaussian_kernels(sigma, radius)).to(x.device)  # (n, 2r+1)
    size = 2 * radius + 1
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    if method == "conv" or (method == "auto" and x.device.type != "cpu"):
        kk = k.repeat_interleave(ch, dim=0)
        flat = padded.reshape(1, n * ch, hgt + 2 * radius, wid + 2 * radius)
        flat = F.conv2d(flat, kk.view(n * ch, 1, size, 1), groups=n * ch)
        flat = F.conv2d(flat, kk.view(n * ch, 1, 1, size), groups=n * ch)
        return flat.view(n, ch, hgt, wid)
    w = k.view(n, 1, 1, 1, size)
    rows = padded[:, :, 0:hgt, :] * w[..., 0]
    for i in range(1, size):
        rows.addcmul_(padded[:, :, i : i + hgt, :], w[..., i])
    out = rows[:, :, :, 0:wid] * w[..., 0]
    for i in range(1, size):
        out.addcmul_(rows[:, :, :, i : i + wid], w[..., i])
    return out


def apply_colour(
    x: torch.Tensor, params: ColourParams, spec: ColourSpec, *, scale: float = 1.0
) -> torch.Tensor:
    """Jitter + grayscale (one matrix), blur, solarize on float (n, 3, H, W) with values in [0, scale]
    (1.0, or 255.0 to skip two rescaling passes on uint8 data); returns the same range."""
    n, _, hgt, wid = x.shape
    if params.any_matrix:
        lin_np, trans_np = colour_matrices(params)
        lin = torch.from_numpy(lin_np).to(x.device)
        trans = torch.from_numpy(trans_np).to(x.device)
        bias = trans @ x.mean(dim=(2, 3)).unsqueeze(2)  # (n, 3, 1)
        x = torch.baddbmm(bias, lin, x.reshape(n, 3, hgt * wid)).view(n, 3, hgt, wid)
        x = x.clamp_(0.0, scale)
    if params.blur.any():
        idx_np = np.flatnonzero(params.blur)
        if len(idx_np) == n:
            x = gaussian_blur(x, params.sigma, spec.blur_kernel)
        else:
            idx = torch.from_numpy(idx_np).to(x.device)
            x = x.index_copy(
                0, idx, gaussian_blur(x.index_select(0, idx), params.sigma[idx_np], spec.blur_kernel)
            )
    if params.solarize.any():
        sol = torch.from_numpy(params.solarize).to(x.device)[:, None, None, None]
        x = torch.where(sol & (x >= spec.solarize_threshold * scale), scale - x, x)
    return x


def normalize(
    x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], *, inplace: bool = False
) -> torch.Tensor:
    """(x - mean) / std per channel of (n, C, H, W)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    inv = torch.tensor([1.0 / v for v in std], dtype=x.dtype, device=x.device)[None, :, None, None]
    return x.sub_(m).mul_(inv) if inplace else (x - m) * inv
