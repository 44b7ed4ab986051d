"""Generate PASS-shaped raw data for tests and benchmarks.

The real PASS release is ten GNU tars ``PASS.<i>.tar`` whose members are
``PASS_dataset/dummy_folder/<hash>.jpeg`` (``hash`` = 32 lowercase hex chars) plus ``pass_metadata.csv``
keyed by ``hash``. This module writes the same layout with synthetic, photo-like JPEGs (smooth gradients,
blurred shapes, mid- and fine-scale texture, so that JPEG entropy and decode cost resemble real photos) or with
variants of real photos (``photos=DIR``), and a metadata CSV full of hard text (commas, quotes, newlines,
non-ASCII, numeric-looking and null-looking strings, empty cells).

With ``bad=True`` it also plants every kind of bad input make-shards must reject (and a few unusual but valid
ones it must keep), and writes ``expected.json`` saying exactly which keys must end up in the shards and which
must be rejected with which reason. ``make_listing`` writes only a metadata CSV and a tar listing of any size
(1.44M rows in seconds) for planning benchmarks. Everything is a pure function of ``seed``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

MEMBER_DIR = "PASS_dataset/dummy_folder"
METADATA_NAME = "pass_metadata.csv"
EXPECTED_NAME = "expected.json"
LISTING_NAME = "listing.csv"
# hash, unickname, datetaken, latitude, longitude are the columns the TFDS PASS builder reads from the real
# pass_metadata.csv (tensorflow/datasets, datasets/pass/pass.py); the other four are YFCC-100M fields that
# exercise integer, URL and licence columns.
COLUMNS: tuple[str, ...] = (
    "hash",
    "unickname",
    "datetaken",
    "dateuploaded",
    "latitude",
    "longitude",
    "photoid",
    "license",
    "url",
)
REASONS: tuple[str, ...] = (
    "corrupt",
    "empty",
    "not-an-image",
    "decompression-bomb",
    "missing-metadata",
    "duplicate-key",
    "not-a-regular-file",
    "unsafe-path",
)
LICENSES = (
    "https://creativecommons.org/licenses/by/2.0/",
    "https://creativecommons.org/licenses/by/2.0/",
    "https://creativecommons.org/licenses/by/2.0/",
    "https://creativecommons.org/licenses/by-sa/2.0/",
)
# Creator names that break naive CSV/JSON handling. Text must survive exactly: numeric-looking ("1984",
# "007"), null-looking ("NA", "null", "NaN") and padded strings included.
HARD_NAMES = (
    'Smith, John "Jack"',
    "line one\nline two",
    "Zoë Ångström-Éclair",
    "漢字カメラ部",
    "sunset 🌅📷 lover",
    "1984",
    "007",
    "NA",
    "null",
    "NaN",
    "  padded name  ",
    "back\\slash",
    '"',
    "comma,only",
    "Ελληνικά",
    "tab\tname",
)
PLAIN_NAMES = (
    "jdoe",
    "photo_walker",
    "Kiwi Bird",
    "m.lens",
    "aurora-hunter",
    "Old Camera Club",
    "rainyday",
    "field notes",
)
TAR_FORMAT = tarfile.GNU_FORMAT
_EPOCH_2000 = 946_684_800


@dataclass
class FakePassConfig:
    """Options of :func:`make_fake_pass`; one field per CLI flag of ``scripts/make_fake_pass.py``."""

    out: str
    n_images: int = 200
    parts: int = 2
    seed: int = 0
    bad: bool = False
    photos: str | None = None
    workers: int = 1
    orphan_rows: int = 3  # metadata rows with no image (bad mode adds them; 0 in clean mode)


@dataclass
class FakePassResult:
    """What was written: tar paths, the metadata CSV and the ``expected.json`` content."""

    tars: list[Path]
    metadata: Path
    expected_path: Path
    expected: dict[str, Any] = field(repr=False)


def pass_hash(seed: int, namespace: str, index: int) -> str:
    """A PASS-like key: 32 lowercase hex chars (PASS hashes are YFCC-100M md5s)."""
    return hashlib.md5(f"pass-wds-fake:{seed}:{namespace}:{index}".encode()).hexdigest()


def member_name(key: str) -> str:
    return f"{MEMBER_DIR}/{key}.jpeg"


# --------------------------------------------------------------------------------------------- images


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


def _noise_bank(seed: int, size: int = 640) -> np.ndarray:
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
        bank = _noise_bank(int(rng.integers(0, 2**31)), size=max(width, height) + 1)
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


def _photo_variant(rng: np.random.Generator, path: Path) -> Image.Image:
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
class _ImageJob:
    seed: int
    index: int
    photos: tuple[str, ...]


@dataclass(frozen=True)
class _ImageOut:
    data: bytes
    width: int
    height: int
    mode: str
    progressive: bool


_BANKS: dict[int, np.ndarray] = {}


def _bank_for(seed: int) -> np.ndarray:
    # One noise bank per process and seed: a cache of a pure function, so results never depend on it.
    if seed not in _BANKS:
        _BANKS.clear()
        _BANKS[seed] = _noise_bank(seed)
    return _BANKS[seed]


def _render(job: _ImageJob) -> _ImageOut:
    rng = np.random.default_rng([job.seed, job.index, 0x1A6E])
    if job.photos:
        img = _photo_variant(rng, Path(job.photos[int(rng.integers(0, len(job.photos)))]))
    else:
        w, h = draw_size(rng)
        img = synth_image(rng, w, h, _bank_for(job.seed))
    if rng.random() < 0.03:
        img = img.convert("L")
    quality = int(rng.integers(85, 93))
    progressive = bool(rng.random() < 0.15)
    return _ImageOut(encode_jpeg(img, quality, progressive), img.width, img.height, img.mode, progressive)


def _render_all(jobs: Sequence[_ImageJob], workers: int) -> Iterator[_ImageOut]:
    if workers <= 1 or len(jobs) < 32:
        yield from map(_render, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_render, jobs, chunksize=16)


# ---------------------------------------------------------------------------------------- bad inputs


def truncated_jpeg(rng: np.random.Generator) -> bytes:
    full = encode_jpeg(synth_image(rng, 400, 300), 90)
    return full[: len(full) // 2]


def bomb_png(width: int = 16_000, height: int = 12_500) -> bytes:
    """A real 1-bit PNG of 200 Mpixel in ~25 kB: over twice Pillow's default MAX_IMAGE_PIXELS, so
    ``Image.open`` raises DecompressionBombError (and any lower custom limit rejects it too)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + tag + body + zlib.crc32(tag + body).to_bytes(4, "big")

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@dataclass
class _Member:
    """One tar member to write: regular file (data) or a special entry (type/linkname)."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


# ------------------------------------------------------------------------------------------ metadata


def metadata_row(rng: np.random.Generator, key: str, hard: bool, name: str | None = None) -> dict[str, str]:
    """One CSV row as text cells ('' = empty cell). ``hard`` picks a creator name from HARD_NAMES."""
    names = HARD_NAMES if hard else PLAIN_NAMES
    pick = names[int(rng.integers(0, len(names)))]
    name = pick if name is None else name
    uploaded = _EPOCH_2000 + int(rng.integers(0, 15 * 365 * 86400))
    taken = uploaded - int(rng.integers(0, 3 * 365 * 86400))
    has_date = rng.random() > 0.08
    has_gps = rng.random() < 0.4
    photoid = int(rng.integers(10**6, 2 * 10**10))
    return {
        "hash": key,
        "unickname": name,
        "datetaken": np.datetime_as_string(np.datetime64(taken, "s")).replace("T", " ") + ".0"
        if has_date
        else "",
        "dateuploaded": str(uploaded),
        "latitude": f"{rng.uniform(-90, 90):.6f}" if has_gps else "",
        "longitude": f"{rng.uniform(-180, 180):.6f}" if has_gps else "",
        "photoid": str(photoid),
        "license": LICENSES[int(rng.integers(0, len(LICENSES)))],
        "url": f"http://www.flickr.com/photos/{photoid % 99991}@N00/{photoid}/",
    }


def write_metadata(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """Write rows as RFC-4180 CSV (UTF-8, ``\\n`` line ends, fields quoted only when needed)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for row in rows:
            w.writerow([row[c] for c in COLUMNS])


def read_metadata(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The generated CSV as ``{key: {column: text}}`` (what tests compare the shards' JSON against)."""
    with open(path, encoding="utf-8", newline="") as f:
        return {row["hash"]: row for row in csv.DictReader(f)}


def expected_json_value(column: str, text: str) -> Any:
    """The JSON value make-shards must write for a cell: null for empty, numbers for numeric columns."""
    if text == "":
        return None
    if column in ("dateuploaded", "photoid"):
        return int(text)
    if column in ("latitude", "longitude"):
        return float(text)
    return text


# ------------------------------------------------------------------------------------------- writing


def _tarinfo(m: _Member, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(m.name)
    ti.type = m.type
    ti.linkname = m.linkname
    ti.size = len(m.data) if m.type == tarfile.REGTYPE else 0
    ti.mtime = mtime
    ti.mode = 0o755 if m.type == tarfile.DIRTYPE else 0o644
    ti.uid = ti.gid = 1000
    ti.uname = ti.gname = "pass"
    if m.type == tarfile.CHRTYPE:
        ti.devmajor, ti.devminor = 1, 3
    return ti


class _PartWriter:
    """Streams one archive at a time (bounded memory): good images in index order, with the planted extra
    members interleaved at their planned positions (``pos`` = number of good members before them)."""

    def __init__(
        self, out: Path, archives: Sequence[str], extras: Sequence[Sequence[tuple[int, _Member]]], seed: int
    ):
        self.out, self.archives, self.mtime = out, archives, 1_632_000_000 + seed % 1000
        self.extras = [sorted(e, key=lambda pm: pm[0]) for e in extras]  # stable: keeps planting order
        self.part, self.count, self.next_extra = -1, 0, 0
        self.tf: tarfile.TarFile | None = None

    def _add(self, m: _Member) -> None:
        assert self.tf is not None
        self.tf.addfile(_tarinfo(m, self.mtime), io.BytesIO(m.data) if m.type == tarfile.REGTYPE else None)

    def _flush_extras(self, upto: int) -> None:
        extras = self.extras[self.part]
        while self.next_extra < len(extras) and extras[self.next_extra][0] <= upto:
            self._add(extras[self.next_extra][1])
            self.next_extra += 1

    def _close(self) -> None:
        if self.tf is not None:
            self._flush_extras(10**18)
            self.tf.close()
            path = self.out / self.archives[self.part]
            os.replace(path.with_name(path.name + ".partial"), path)
            self.tf = None

    def _open(self, part: int) -> None:
        self._close()
        self.part, self.count, self.next_extra = part, 0, 0
        path = self.out / self.archives[part]
        self.tf = tarfile.open(path.with_name(path.name + ".partial"), "w", format=TAR_FORMAT)  # noqa: SIM115

    def add_good(self, part: int, m: _Member) -> None:
        while self.part < part:
            self._open(self.part + 1)
        self._flush_extras(self.count)
        self._add(m)
        self.count += 1

    def finish(self) -> None:
        while self.part < len(self.archives) - 1:
            self._open(self.part + 1)
        self._close()


def _accepted_entry(
    archive: str, member: str, data: bytes, fmt: str, w: int, h: int, mode: str, prog: bool
) -> dict[str, Any]:
    return {
        "archive": archive,
        "member": member,
        "format": fmt,
        "ext": "png" if fmt == "PNG" else "jpg",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": w,
        "height": h,
        "mode": mode,
        "progressive": prog,
    }


def make_fake_pass(cfg: FakePassConfig) -> FakePassResult:
    """Write ``PASS.<i>.tar`` parts, ``pass_metadata.csv`` and ``expected.json`` under ``cfg.out``."""
    if cfg.n_images < 1 or cfg.parts < 1:
        raise ValueError("n_images and parts must be >= 1")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    photos: tuple[str, ...] = ()
    if cfg.photos:
        exts = {".jpg", ".jpeg", ".png"}
        photos = tuple(sorted(str(p) for p in Path(cfg.photos).rglob("*") if p.suffix.lower() in exts))
        if not photos:
            raise ValueError(f"no .jpg/.jpeg/.png files under {cfg.photos}")
    rng = np.random.default_rng([cfg.seed, 0xD47A])
    keys = [pass_hash(cfg.seed, "img", i) for i in range(cfg.n_images)]
    jobs = [_ImageJob(cfg.seed, i, photos) for i in range(cfg.n_images)]
    part_of = [i * cfg.parts // cfg.n_images for i in range(cfg.n_images)]
    per_part = [part_of.count(p) for p in range(cfg.parts)]
    archives = [f"PASS.{p}.tar" for p in range(cfg.parts)]
    extras: list[list[tuple[int, _Member]]] = [[] for _ in range(cfg.parts)]
    accepted: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, str]] = []
    rejected: list[dict[str, Any]] = []
    orphans: list[str] = []
    if cfg.bad:
        _plant_bad(cfg, rng, archives, per_part, extras, accepted, rejected, rows)
        orphans = [pass_hash(cfg.seed, "orphan", j) for j in range(cfg.orphan_rows)]
        rows.extend(metadata_row(rng, k, hard=True) for k in orphans)
    writer = _PartWriter(out, archives, extras, cfg.seed)
    for i, img in enumerate(_render_all(jobs, cfg.workers)):
        key, p = keys[i], part_of[i]
        writer.add_good(p, _Member(member_name(key), img.data))
        accepted[key] = _accepted_entry(
            archives[p], member_name(key), img.data, "JPEG", img.width, img.height, img.mode, img.progressive
        )
        # every 5th creator is hard text, cycling through all of HARD_NAMES (all present from 80 images on)
        hard = HARD_NAMES[(i // 5) % len(HARD_NAMES)] if i % 5 == 0 else None
        rows.append(metadata_row(rng, key, hard=False, name=hard))
    writer.finish()
    order = rng.permutation(len(rows))
    rows = [rows[int(j)] for j in order]
    tars = [out / a for a in archives]
    meta_path = out / METADATA_NAME
    write_metadata(meta_path, rows)
    expected: dict[str, Any] = {
        "generator": "pass_wds.fakedata",
        "version": 1,
        "seed": cfg.seed,
        "archives": archives,
        "metadata": METADATA_NAME,
        "key_column": "hash",
        "columns": list(COLUMNS),
        "accepted": accepted,
        "rejected": rejected,
        "metadata_without_image": orphans,
        "counts": {
            "accepted": len(accepted),
            "rejected": len(rejected),
            "metadata_rows": len(rows),
            "by_reason": {
                r: sum(1 for x in rejected if x["reason"] == r)
                for r in REASONS
                if any(x["reason"] == r for x in rejected)
            },
        },
        "notes": (
            "accepted: keys that must be in the shards with these exact bytes (ext = real encoding); "
            "rejected: inputs that must appear in errors.jsonl with this reason and never in the shards; "
            "metadata_without_image: rows deliberately left without any image (rows of rejected inputs "
            "may be reported too)."
        ),
    }
    exp_path = out / EXPECTED_NAME
    exp_path.write_text(
        json.dumps(expected, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )
    return FakePassResult(tars, meta_path, exp_path, expected)


def _plant_bad(
    cfg: FakePassConfig,
    rng: np.random.Generator,
    archives: list[str],
    per_part: list[int],
    extras: list[list[tuple[int, _Member]]],
    accepted: dict[str, dict[str, Any]],
    rejected: list[dict[str, Any]],
    rows: list[dict[str, str]],
) -> None:
    """Insert the bad (and unusual-but-valid) inputs at seeded positions in the parts."""
    counter = iter(range(10**6))

    def new_key() -> str:
        return pass_hash(cfg.seed, "bad", next(counter))

    def place(part: int, m: _Member, pos: int | None = None) -> int:
        pos = int(rng.integers(0, per_part[part] + 1)) if pos is None else pos
        extras[part].append((pos, m))
        return pos

    def reject(part: int, m: _Member, key: str, reason: str, note: str, with_row: bool = True) -> None:
        place(part, m)
        rejected.append(
            {"key": key, "archive": archives[part], "member": m.name, "reason": reason, "note": note}
        )
        if with_row:
            rows.append(metadata_row(rng, key, hard=False))

    def keep(part: int, key: str, data: bytes, fmt: str, img: Image.Image, prog: bool) -> None:
        m = _Member(member_name(key), data)
        place(part, m)
        accepted[key] = _accepted_entry(
            archives[part], m.name, data, fmt, img.width, img.height, img.mode, prog
        )
        rows.append(metadata_row(rng, key, hard=True))

    last = len(archives) - 1
    pick = lambda: int(rng.integers(0, len(archives)))  # noqa: E731

    # valid but unusual: kept
    base = synth_image(rng, 500, 333)
    keep(pick(), new_key(), encode_png(base), "PNG", base, False)  # PNG bytes under a .jpeg name
    cmyk = base.convert("CMYK")
    keep(pick(), new_key(), encode_jpeg(cmyk, 90), "JPEG", cmyk, False)
    gray = base.convert("L")
    keep(pick(), new_key(), encode_jpeg(gray, 88), "JPEG", gray, False)
    keep(pick(), new_key(), encode_jpeg(base, 90, progressive=True), "JPEG", base, True)

    # bad content: rejected at validation
    k = new_key()
    reject(pick(), _Member(member_name(k), truncated_jpeg(rng)), k, "corrupt", "JPEG cut in half")
    k = new_key()
    reject(pick(), _Member(member_name(k), b""), k, "empty", "zero-byte member")
    k = new_key()
    text = b"this is not an image, just text\nwith a second line\n"
    reject(pick(), _Member(member_name(k), text), k, "not-an-image", "plain text under a .jpeg name")
    k = new_key()
    reject(
        pick(),
        _Member(member_name(k), bomb_png()),
        k,
        "decompression-bomb",
        "1-bit PNG declaring 16000x12500 (200 Mpixel)",
    )

    # bad members: rejected while listing the tar
    k = new_key()
    reject(pick(), _Member(member_name(k), type=tarfile.DIRTYPE), k, "not-a-regular-file", "directory member")
    k = new_key()
    reject(
        pick(),
        _Member(member_name(k), type=tarfile.SYMTYPE, linkname="/etc/passwd"),
        k,
        "not-a-regular-file",
        "symlink to /etc/passwd",
    )
    k = new_key()
    reject(pick(), _Member(member_name(k), type=tarfile.CHRTYPE), k, "not-a-regular-file", "character device")
    ok_img = encode_jpeg(synth_image(rng, 300, 200), 90)
    k = new_key()
    reject(
        pick(),
        _Member(f"/tmp/pass_wds_escape_{k}/{k}.jpeg", ok_img),
        k,
        "unsafe-path",
        "absolute member path",
    )
    k = new_key()
    reject(
        pick(),
        _Member(f"PASS_dataset/../../pass_wds_escape_{k}/{k}.jpeg", ok_img),
        k,
        "unsafe-path",
        "member path with '..'",
    )

    # a valid image with no metadata row
    k = new_key()
    miss = encode_jpeg(synth_image(rng, 500, 375), 90)
    reject(
        pick(),
        _Member(member_name(k), miss),
        k,
        "missing-metadata",
        "valid JPEG whose hash has no metadata row",
        with_row=False,
    )
    rejected[-1]["kept_with_allow_missing_metadata"] = True
    rejected[-1]["sha256"] = hashlib.sha256(miss).hexdigest()

    # the same key in two archives: the first (lowest part index, as inputs are listed) wins
    k = new_key()
    first_img = synth_image(rng, 500, 400)
    first = encode_jpeg(first_img, 90)
    m_first = _Member(member_name(k), first)
    pos_first = place(0, m_first)
    accepted[k] = _accepted_entry(
        archives[0], m_first.name, first, "JPEG", first_img.width, first_img.height, "RGB", False
    )
    rows.append(metadata_row(rng, k, hard=True))
    second = encode_jpeg(synth_image(rng, 500, 400), 90)
    if last == 0:  # single part: the duplicate goes after the first in the same archive
        place(0, _Member(member_name(k), second), pos_first)  # same position, planted later: written after
        rejected.append(
            {
                "key": k,
                "archive": archives[0],
                "member": m_first.name,
                "reason": "duplicate-key",
                "note": "second copy in the same archive",
            }
        )
    else:
        place(last, _Member(member_name(k), second))
        rejected.append(
            {
                "key": k,
                "archive": archives[last],
                "member": member_name(k),
                "reason": "duplicate-key",
                "note": f"same key as a member of {archives[0]}",
            }
        )
    rejected[-1]["sha256"] = hashlib.sha256(second).hexdigest()


# ------------------------------------------------------------------------------------- listing only


@dataclass
class Listing:
    """A tar listing without the tars: parallel arrays, one entry per image, in archive order."""

    keys: list[str]
    sources: list[str]
    members: list[str]
    offsets: np.ndarray  # byte offset of the member's data in its archive (int64)
    sizes: np.ndarray  # data size in bytes (int64)

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self) -> Iterator[tuple[str, str, str, int, int]]:
        for i in range(len(self.keys)):
            yield self.keys[i], self.sources[i], self.members[i], int(self.offsets[i]), int(self.sizes[i])


def draw_jpeg_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    """JPEG byte sizes for ~500-px photos: log-normal, median ~ 60 kB, clipped to 3 kB..600 kB."""
    return np.clip(rng.lognormal(np.log(60_000), 0.55, size=n), 3_000, 600_000).astype(np.int64)


def make_listing(
    out: str | os.PathLike[str] | None, n: int, parts: int = 10, seed: int = 0, write: bool = True
) -> Listing:
    """A PASS-scale metadata CSV and matching tar listing, without any image bytes.

    Offsets follow the real GNU tar layout of the members (512-byte header, data padded to 512). With
    ``write`` (default) ``pass_metadata.csv`` and ``listing.csv`` (key, source, member, offset, size) are
    written under ``out``.
    """
    rng = np.random.default_rng([seed, 0x715])
    keys = [hashlib.md5(f"pass-wds-fake:{seed}:listing:{i}".encode()).hexdigest() for i in range(n)]
    sizes = draw_jpeg_sizes(rng, n)
    part = (np.arange(n, dtype=np.int64) * parts) // max(n, 1)
    footprint = 512 + (sizes + 511) // 512 * 512
    offsets = np.empty(n, dtype=np.int64)
    for p in range(parts):
        idx = np.nonzero(part == p)[0]
        if len(idx):
            starts = np.concatenate(([0], np.cumsum(footprint[idx])[:-1]))
            offsets[idx] = starts + 512
    sources = [f"PASS.{int(p)}.tar" for p in part]
    members = [f"{MEMBER_DIR}/{k}.jpeg" for k in keys]
    listing = Listing(keys, sources, members, offsets, sizes)
    if write and out is not None:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        _write_listing_metadata(d / METADATA_NAME, keys, seed)
        with open(d / LISTING_NAME, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(("key", "source", "member", "offset", "size"))
            w.writerows(listing.rows())
    return listing


def _write_listing_metadata(path: Path, keys: Sequence[str], seed: int) -> None:
    """Metadata for the listing, vectorised (1.44M rows in a few seconds); every 50th name is hard text."""
    n = len(keys)
    rng = np.random.default_rng([seed, 0x3E7A])
    uploaded = _EPOCH_2000 + rng.integers(0, 15 * 365 * 86400, size=n)
    taken = (uploaded - rng.integers(0, 3 * 365 * 86400, size=n)).astype("datetime64[s]")
    taken_s = np.datetime_as_string(taken)
    has_date = rng.random(n) > 0.08
    has_gps = rng.random(n) < 0.4
    lat = rng.uniform(-90, 90, size=n)
    lon = rng.uniform(-180, 180, size=n)
    photoid = rng.integers(10**6, 2 * 10**10, size=n)
    name_idx = rng.integers(0, len(PLAIN_NAMES), size=n)
    lic_idx = rng.integers(0, len(LICENSES), size=n)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for i in range(n):
            pid = int(photoid[i])
            gps = bool(has_gps[i])
            w.writerow(
                (
                    keys[i],
                    HARD_NAMES[(i // 50) % len(HARD_NAMES)] if i % 50 == 0 else PLAIN_NAMES[name_idx[i]],
                    str(taken_s[i]).replace("T", " ") + ".0" if has_date[i] else "",
                    int(uploaded[i]),
                    f"{lat[i]:.6f}" if gps else "",
                    f"{lon[i]:.6f}" if gps else "",
                    pid,
                    LICENSES[lic_idx[i]],
                    f"http://www.flickr.com/photos/{pid % 99991}@N00/{pid}/",
                )
            )


def read_listing(path: str | os.PathLike[str]) -> Listing:
    """Read ``listing.csv`` back."""
    keys: list[str] = []
    sources: list[str] = []
    members: list[str] = []
    offs: list[int] = []
    sizes: list[int] = []
    with open(path, encoding="utf-8", newline="") as f:
        r = csv.reader(f)
        next(r)
        for k, s, m, o, z in r:
            keys.append(k)
            sources.append(s)
            members.append(m)
            offs.append(int(o))
            sizes.append(int(z))
    return Listing(
        keys, sources, members, np.asarray(offs, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
    )
