"""Baseline converter: LitData's ``optimize()`` over the same raw images (the original JPEG bytes, so it is
lossless like make-shards), reading each image by its offset in the raw tars.

    python benchmarks/baselines/litdata_optimize.py RAW_DIR OUT_DIR WORKERS
"""

from __future__ import annotations

import csv
import json
import sys
import tarfile
from pathlib import Path
from typing import Any


def list_items(raw: Path, meta: dict[str, dict[str, str]]) -> list[tuple[str, int, int, str, str]]:
    """One item per image with its metadata row as JSON (LitData's workers are spawned: no shared globals)."""
    items = []
    for path in sorted(raw.glob("PASS.*.tar")):
        with tarfile.open(path) as tf:
            for m in tf:
                key = Path(m.name).stem
                if m.isfile() and key in meta:
                    items.append((str(path), m.offset_data, m.size, key, json.dumps(meta[key])))
    return items


def read_item(item: tuple[str, int, int, str, str]) -> dict[str, Any]:
    path, offset, size, key, meta = item
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    return {"key": key, "jpg": data, "json": meta}


def main(raw: Path, out: Path, workers: int) -> None:
    from litdata import optimize

    with open(raw / "pass_metadata.csv", newline="", encoding="utf-8") as f:
        meta = {row["hash"]: row for row in csv.DictReader(f)}
    items = list_items(raw, meta)
    optimize(fn=read_item, inputs=items, output_dir=str(out), chunk_bytes="256MB", num_workers=workers)
    print(f"wrote {len(items)} samples")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
