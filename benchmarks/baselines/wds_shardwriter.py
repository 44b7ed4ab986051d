"""Baseline converter: what a user writes with webdataset's ShardWriter (one process, tar order, no global
shuffle, no validation, no index, no checksums).

    python benchmarks/baselines/wds_shardwriter.py RAW_DIR OUT_DIR
"""

from __future__ import annotations

import csv
import sys
import tarfile
from pathlib import Path

import webdataset as wds


def main(raw: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(raw / "pass_metadata.csv", newline="", encoding="utf-8") as f:
        meta = {row["hash"]: row for row in csv.DictReader(f)}
    n = 0
    with wds.ShardWriter(str(out / "pass-%06d.tar"), maxsize=256e6, verbose=0) as sink:
        for path in sorted(raw.glob("PASS.*.tar")):
            with tarfile.open(path) as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    key = Path(m.name).stem
                    if key not in meta:
                        continue
                    data = tf.extractfile(m).read()  # type: ignore[union-attr]
                    sink.write({"__key__": key, "jpg": data, "json": meta[key]})
                    n += 1
    print(f"wrote {n} samples")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
