"""Photo-like images: synthetic (a smooth colour field, blurred shapes, two scales of texture, so that JPEG
entropy and decode cost resemble real photos) or variants of real photos, drawn in PASS's size range."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps


def draw_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) drawn like PASS: long side mostly 500, short side 200-500, ~10 % smaller images."""
    if rng.random() < 0.1:
        long_side = int(rng.integers(120, 500))
    else:
        long_side = 500
    short = int(np.clip(round(long_side * rng.uniform(0.4, 1.0)), min(long_side, 80), long_side))
    if long_side == 500:
        short = max(short, 200)
    return (long_side, short) if rng.random() < 0.7 else (short, long_side)


def noise_bank(seed: int, size: int = 640) -> np.ndarray:
    rng = np.random.default_rng([seed, 0x5EED])
    return rng.normal(0.0, 1.0, size=(size, size, 3)).astype(np.float32)


def synth_image(
    rng: np.random.Generator, width: int, height: int, bank: np.ndarray | None = None
) -> Image.Image:
    """A photo-like RGB image: a smooth colour field, blurred shapes and two scales of texture."""
    # natural scenes have a dominant, muted palette: colours scatter around one per-image tone
    tone = rng.uniform(50, 190, size=3)
    spread = float(rng.uniform(25, 70))

    def colours(*shape: int) -> np.ndarray:
        return np.clip(tone + rng.normal(0, spread, size=(*shape, 3)), 0, 255).astype(np.uint8)

    gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    small = colours(gh, gw)
    small = np.clip(small * np.linspace(1.15, 0.8, gh)[:, None, None], 0, 255).astype(
        np.uint8
    )  # lit from above
    img = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 14))):
        colour = tuple(int(c) for c in colours())
        x0, x1 = sorted(int(v) for v in rng.integers(-width // 4, width + width // 4, size=2))
        y0, y1 = sorted(int(v) for v in rng.integers(-height // 4, height + height // 4, size=2))
        kind = rng.random()
        if kind < 0.45:
            draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=colour)
        elif kind < 0.8:
            pts = [
                (int(rng.integers(0, width)), int(rng.integers(0, height)))
                for _ in range(int(rng.integers(3, 7)))
            ]
            draw.polygon(pts, fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 12)))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 2.5))))
    arr = np.asarray(img, dtype=np.float32)
    # mid-scale texture (foliage, fabric, gravel): coarse noise upsampled
    cell = int(rng.integers(3, 10))
    coarse = rng.integers(0, 256, size=(height // cell + 2, width // cell + 2), dtype=np.uint8)
    tex = np.asarray(
        Image.fromarray(coarse, "L").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32
    )
    arr += (tex[:, :, None] - 128.0) * float(rng.uniform(0.1, 0.4))
    # fine grain (sensor noise): a random window of a shared Gaussian bank
    if bank is None:
        bank = noise_bank(int(rng.integers(0, 2**31)), size=max(width, height) + 1)
    oy = int(rng.integers(0, bank.shape[0] - height + 1))
    ox = int(rng.integers(0, bank.shape[1] - width + 1))
    arr += bank[oy : oy + height, ox : ox + width] * float(rng.uniform(3.0, 10.0))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encode_jpeg(img: Image.Image, quality: int, progressive: bool = False) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, progressive=progressive)
    return buf.getvalue()


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def photo_variant(rng: np.random.Generator, path: Path) -> Image.Image:
    """A PASS-sized variant of a real photo: random crop, flip, small colour shift, long side <= 500."""
    with Image.open(path) as src:
        img = ImageOps.exif_transpose(src).convert("RGB")
    w, h = img.size
    frac = float(rng.uniform(0.6, 1.0))
    cw, ch = max(16, int(w * frac)), max(16, int(h * frac))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    long_side = 500 if rng.random() > 0.1 else int(rng.integers(150, 500))
    scale = min(1.0, long_side / max(img.size))
    img = img.resize(
        (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS
    )
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=3).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@dataclass(frozen=True)
class RenderJob:
    """Images ``start`` to ``stop`` (exclusive) of a generated set: one task. Each task draws the shared noise
    bank once (a pure function of the seed), so no process keeps a cache between tasks."""

    seed: int
    start: int
    stop: int
    photos: tuple[str, ...]


@dataclass(frozen=True)
class RenderedImage:
    data: bytes
    width: int
    height: int
    mode: str
    progressive: bool


def render(job: RenderJob) -> list[RenderedImage]:
    """The JPEGs of one task; image ``i`` depends only on (seed, i, photos)."""
    bank = None if job.photos else noise_bank(job.seed)
    out = []
    for index in range(job.start, job.stop):
        rng = np.random.default_rng([job.seed, index, 0x1A6E])
        if job.photos:
            img = photo_variant(rng, Path(job.photos[int(rng.integers(0, len(job.photos)))]))
        else:
            w, h = draw_size(rng)
            img = synth_image(rng, w, h, bank)
        if rng.random() < 0.03:
            img = img.convert("L")
        quality = int(rng.integers(85, 93))
        progressive = bool(rng.random() < 0.15)
        out.append(
            RenderedImage(
                encode_jpeg(img, quality, progressive), img.width, img.height, img.mode, progressive
            )
        )
    return out


def render_all(
    seed: int, n: int, photos: tuple[str, ...], workers: int, chunk: int = 64
) -> Iterator[RenderedImage]:
    """Images ``0..n-1`` in order, in ``workers`` processes for larger sets."""
    if workers <= 1 or n < 32:
        yield from render(RenderJob(seed, 0, n, photos))
        return
    jobs = [RenderJob(seed, a, min(a + chunk, n), photos) for a in range(0, n, chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for images in pool.map(render, jobs):
            yield from images
