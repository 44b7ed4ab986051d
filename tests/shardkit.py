"""Test helpers for the loader: write small shards (+ DALI .idx, index.json) and a tiny PIL recipe.

Used by tests/test_loading*.py and by the torchrun worker scripts in this folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def jpeg_bytes(i: int, size: tuple[int, int] = (24, 16)) -> bytes:
    """A small JPEG whose colour encodes ``i`` (so decoded content can be told apart)."""
    img = Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> tuple[int, int]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    start = tf.offset
    tf.addfile(info, io.BytesIO(data))
    return start + 512, len(data)


def write_shards(
    out: Path,
    counts: Sequence[int],
    *,
    name: str = "shard",
    image: Callable[[int, int], bytes] | None = None,
    with_idx: bool = True,
    with_index_json: bool = True,
) -> list[str]:
    """Write ``len(counts)`` shards; sample ``i`` of shard ``s`` has key ``s{s:03d}_{i:05d}``, a .jpg and a .json.

    Returns the shard paths. ``image(shard, i)`` overrides the JPEG bytes (e.g. to plant a truncated one).
    """
    out.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    shardlist: list[dict[str, Any]] = []
    gid = 0
    for s, n in enumerate(counts):
        path = out / f"{name}-{s:06d}.tar"
        lines = []
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
            for i in range(n):
                key = f"s{s:03d}_{i:05d}"
                img = image(s, i) if image else jpeg_bytes(gid)
                meta = json.dumps({"shard": s, "i": i, "gid": gid}).encode()
                o1, n1 = _add(tf, f"{key}.jpg", img)
                o2, n2 = _add(tf, f"{key}.json", meta)
                lines.append(f"jpg {o1} {n1} {key}.jpg json {o2} {n2} {key}.json")
                gid += 1
        if with_idx:
            (out / f"{name}-{s:06d}.idx").write_text(f"v1.2 {n}\n" + "".join(ln + "\n" for ln in lines))
        paths.append(str(path))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        shardlist.append(
            {
                "url": path.name,
                "nsamples": n,
                "filesize": os.path.getsize(path),
                "sha256": digest,
                "idx": f"{name}-{s:06d}.idx",
            }
        )
    if with_index_json:
        doc = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": name, "shardlist": shardlist}
        (out / "index.json").write_text(json.dumps(doc))
    return paths


def all_keys(counts: Sequence[int]) -> list[str]:
    return [f"s{s:03d}_{i:05d}" for s, n in enumerate(counts) for i in range(n)]


class TinyRecipe:
    """Private stand-in for a pass_wds.augment recipe: PIL decode, resize to ``size``², uint8 CHW."""

    def __init__(self, size: int = 8, views: int = 0) -> None:
        self.size = size
        self.views = views

    def _one(self, data: bytes, rng: np.random.Generator) -> torch.Tensor:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB").resize((self.size, self.size))
            arr = np.array(im, dtype=np.uint8)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()

    def __call__(self, data: bytes, ext: str, rng: np.random.Generator) -> dict[str, Any]:
        if self.views:
            return {"views": [self._one(data, rng) for _ in range(self.views)]}
        return {"image": self._one(data, rng)}
