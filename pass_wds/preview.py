"""``pass-wds preview``: a contact sheet of a source, or of what a recipe makes of it.

Without a recipe: N samples as thumbnails with their key and creator (the CC-BY credit). With ``--recipe``:
one row per sample, its augmented views side by side, exactly as the loader produces them — the same
``make_loader`` call a training script makes, device stage included (run on the CPU here), denormalised for
display. All views of a row are drawn at one scale, so DINO's local crops look as small as they are.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pass_wds.format.samples import CREATOR_COLUMNS, IMAGE_EXTS

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
PAD = 6
LINE = 14  # caption line height in px
HEADER = 2 * LINE + PAD


@dataclass
class Preview:
    """What was drawn: the image size and, per sample, the boxes (left, top, right, bottom) of its pictures
    (one per view with a recipe) and of its caption."""

    size: tuple[int, int]
    keys: list[str]
    tiles: list[list[tuple[int, int, int, int]]] = field(default_factory=list)
    captions: list[tuple[int, int, int, int]] = field(default_factory=list)
    views: list[list[np.ndarray]] = field(default_factory=list, repr=False)  # HWC uint8, as drawn (unscaled)


def _font() -> Any:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def creator_of(meta: dict[str, Any]) -> str | None:
    lower = {str(k).lower(): k for k in meta}
    for c in CREATOR_COLUMNS:
        if c in lower and meta[lower[c]] not in (None, ""):
            return str(meta[lower[c]])
    return None


def _fit(text: str, width: int, draw: ImageDraw.ImageDraw, font: Any) -> str:
    text = " ".join(text.split())  # one line: metadata may hold newlines and tabs
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _caption(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], key: str, meta: dict[str, Any]
) -> None:
    font = _font()
    width = box[2] - box[0]
    creator = creator_of(meta)
    draw.text((box[0], box[1]), _fit(key, width, draw, font), fill=TEXT, font=font)
    credit = f"© {creator}" if creator else "(no creator)"
    draw.text((box[0], box[1] + LINE), _fit(credit, width, draw, font), fill=TEXT, font=font)


def _thumbnail(data: bytes, size: int) -> Image.Image:
    from pass_wds.decoding import decode_rgb

    img = decode_rgb(data, draft=(size, size))  # upright RGB, any format (CMYK, alpha, 16-bit…)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    return img


def _to_uint8(view: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """One loader view (3×H×W; normalised float or uint8) → H×W×3 uint8 for display."""
    import torch

    x = view.detach().to("cpu")
    if x.dtype == torch.uint8:
        out = x
    else:
        m = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1)
        s = torch.tensor(std, dtype=x.dtype).view(3, 1, 1)
        out = ((x * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


def first_batch(
    source: str | list[str],
    n: int,
    *,
    recipe: str | None,
    seed: int = 0,
    storage_options: dict[str, Any] | None = None,
    allow_raw_archives: bool = False,
    retry_seconds: float | None = None,
    read_timeout: float | None = None,
) -> tuple[dict[str, Any], Any]:
    """The loader's first batch of ``n`` samples (fewer if the source has fewer) and the recipe used."""
    from pass_wds.augment import load_recipe
    from pass_wds.dataset import resolve
    from pass_wds.loading import make_loader
    from pass_wds.storage import RetryPolicy

    retry = RetryPolicy.of(retry_seconds, read_timeout)
    total = resolve(
        source, storage_options, counts=True, allow_raw_archives=allow_raw_archives, retry=retry
    ).samples
    rec = load_recipe(recipe) if recipe else None
    loader = make_loader(
        source,
        batch_size=min(n, total),
        recipe=rec,
        num_workers=0,
        seed=seed,
        device="cpu" if rec is not None else None,
        storage_options=storage_options,
        persistent_workers=False,
        allow_raw_archives=allow_raw_archives,
        retry_seconds=retry.seconds,
        read_timeout=retry.read_timeout,
    )
    loader.set_epoch(0)
    return next(iter(loader)), rec


def contact_sheet(
    batch: dict[str, Any], *, columns: int, thumb: int, title: str
) -> tuple[Image.Image, Preview]:
    keys: list[str] = list(batch["__key__"])
    metas: list[dict[str, Any]] = list(batch.get("json") or [{} for _ in keys])
    exts = [e for e in batch if e in IMAGE_EXTS]
    n = len(keys)
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    tile_w, tile_h = thumb + 2 * PAD, thumb + 2 * PAD + 2 * LINE
    sheet = Image.new("RGB", (cols * tile_w, HEADER + rows * tile_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, PAD), _fit(title, sheet.width - 2 * PAD, draw, _font()), fill=TEXT, font=_font())
    result = Preview(sheet.size, keys)
    for i, key in enumerate(keys):
        x0, y0 = (i % cols) * tile_w + PAD, HEADER + (i // cols) * tile_h + PAD
        data = next(batch[e][i] for e in exts if batch[e][i] is not None)
        img = _thumbnail(data, thumb)
        left, top = x0 + (thumb - img.width) // 2, y0 + (thumb - img.height) // 2
        sheet.paste(img, (left, top))
        result.tiles.append([(left, top, left + img.width, top + img.height)])
        result.views.append([np.asarray(img)])
        cap = (x0, y0 + thumb + 2, x0 + thumb, y0 + thumb + 2 + 2 * LINE)
        _caption(draw, cap, key, metas[i])
        result.captions.append(cap)
    return sheet, result


def view_rows(batch: dict[str, Any], recipe: Any, *, thumb: int, title: str) -> tuple[Image.Image, Preview]:
    keys: list[str] = list(batch["__key__"])
    metas: list[dict[str, Any]] = list(batch.get("json") or [{} for _ in keys])
    views = batch["views"] if "views" in batch else [batch["image"]]
    cfg = getattr(recipe, "config", None)
    mean = tuple(getattr(cfg, "mean", (0.485, 0.456, 0.406)))
    std = tuple(getattr(cfg, "std", (0.229, 0.224, 0.225)))
    largest = max(int(v.shape[-1]) for v in views)
    scale = thumb / largest
    widths = [max(1, round(int(v.shape[-1]) * scale)) for v in views]
    heights = [max(1, round(int(v.shape[-2]) * scale)) for v in views]
    caption_w = max(thumb, 180)
    row_h = max(max(heights), 2 * LINE) + 2 * PAD
    width = caption_w + 2 * PAD + sum(widths) + PAD * len(views) + PAD
    sheet = Image.new("RGB", (width, HEADER + len(keys) * row_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, PAD), _fit(title, sheet.width - 2 * PAD, draw, _font()), fill=TEXT, font=_font())
    result = Preview(sheet.size, keys)
    for i, key in enumerate(keys):
        y0 = HEADER + i * row_h + PAD
        cap = (PAD, y0, PAD + caption_w, y0 + 2 * LINE)
        _caption(draw, cap, key, metas[i])
        result.captions.append(cap)
        x = PAD + caption_w + PAD
        boxes, drawn = [], []
        for v, w, h in zip(views, widths, heights, strict=True):
            arr = _to_uint8(v[i], mean, std)
            drawn.append(arr)
            img = Image.fromarray(arr)
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            sheet.paste(img, (x, y0))
            boxes.append((x, y0, x + w, y0 + h))
            x += w + PAD
        result.tiles.append(boxes)
        result.views.append(drawn)
    return sheet, result


def preview(
    source: str | list[str],
    out: str,
    *,
    n: int = 16,
    recipe: str | None = None,
    seed: int = 0,
    columns: int = 4,
    thumb: int = 160,
    storage_options: dict[str, Any] | None = None,
    allow_raw_archives: bool = False,
    retry_seconds: float | None = None,
    read_timeout: float | None = None,
) -> Preview:
    """Draw ``n`` samples of ``source`` (the loader's first batch for ``seed``) into the PNG/JPEG ``out``."""
    from pass_wds import storage

    batch, rec = first_batch(
        source,
        n,
        recipe=recipe,
        seed=seed,
        storage_options=storage_options,
        allow_raw_archives=allow_raw_archives,
        retry_seconds=retry_seconds,
        read_timeout=read_timeout,
    )
    name = source if isinstance(source, str) else f"{len(source)} sources"
    if rec is None:
        title = f"{storage.redact(name)} · {len(batch['__key__'])} samples · seed {seed}"
        sheet, result = contact_sheet(batch, columns=columns, thumb=thumb, title=title)
    else:
        nviews = len(batch["views"]) if "views" in batch else 1
        title = (
            f"{storage.redact(name)} · recipe {recipe} ({nviews} views, device stage on cpu) · seed {seed}"
        )
        sheet, result = view_rows(batch, rec, thumb=thumb, title=title)
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG" if out.lower().endswith((".jpg", ".jpeg")) else "PNG", optimize=True)
    storage.write_bytes(out, buf.getvalue(), storage_options)
    return result
