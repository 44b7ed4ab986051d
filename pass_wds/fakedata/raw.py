"""PASS-shaped raw archives: ``PASS.<i>.tar`` in the real member layout, ``pass_metadata.csv`` and
``expected.json`` (exactly which keys make-shards must keep, with which bytes, and which it must reject, with
which reason)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pass_wds.fakedata.bad import plant_bad
from pass_wds.fakedata.images import render_all
from pass_wds.fakedata.layout import (
    EXPECTED_NAME,
    METADATA_NAME,
    REASONS,
    TAR_FORMAT,
    Member,
    accepted_entry,
    member_name,
    pass_hash,
)
from pass_wds.fakedata.metadata import COLUMNS, HARD_NAMES, metadata_row, write_metadata


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


def _tarinfo(m: Member, mtime: int) -> tarfile.TarInfo:
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
        self, out: Path, archives: Sequence[str], extras: Sequence[Sequence[tuple[int, Member]]], seed: int
    ):
        self.out, self.archives, self.mtime = out, archives, 1_632_000_000 + seed % 1000
        self.extras = [sorted(e, key=lambda pm: pm[0]) for e in extras]  # stable: keeps planting order
        self.part, self.count, self.next_extra = -1, 0, 0
        self.tf: tarfile.TarFile | None = None

    def _add(self, m: Member) -> None:
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

    def add_good(self, part: int, m: Member) -> None:
        while self.part < part:
            self._open(self.part + 1)
        self._flush_extras(self.count)
        self._add(m)
        self.count += 1

    def finish(self) -> None:
        while self.part < len(self.archives) - 1:
            self._open(self.part + 1)
        self._close()


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
    part_of = [i * cfg.parts // cfg.n_images for i in range(cfg.n_images)]
    per_part = [part_of.count(p) for p in range(cfg.parts)]
    archives = [f"PASS.{p}.tar" for p in range(cfg.parts)]
    extras: list[list[tuple[int, Member]]] = [[] for _ in range(cfg.parts)]
    accepted: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, str]] = []
    rejected: list[dict[str, Any]] = []
    orphans: list[str] = []
    if cfg.bad:
        plant_bad(cfg, rng, archives, per_part, extras, accepted, rejected, rows)
        orphans = [pass_hash(cfg.seed, "orphan", j) for j in range(cfg.orphan_rows)]
        rows.extend(metadata_row(rng, k, hard=True) for k in orphans)
    writer = _PartWriter(out, archives, extras, cfg.seed)
    for i, img in enumerate(render_all(cfg.seed, cfg.n_images, photos, cfg.workers)):
        key, p = keys[i], part_of[i]
        writer.add_good(p, Member(member_name(key), img.data))
        accepted[key] = accepted_entry(
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
