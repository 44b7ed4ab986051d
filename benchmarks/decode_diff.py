"""Pixel differences between the decode modes, on the corpus (the figures quoted in docs/augment.md).

* ``accurate`` through simplejpeg vs through the Pillow/torchvision decoders: must be identical;
* ``fast`` vs ``accurate``: mean absolute error (0..255) per image, two 224-px random-resized crops each;
* ``device`` (roi_align crops of a full-size batched decode, run here with ``device="cpu"``) vs the worker path,
  with the same crops: against the worker path decoding at full size, and against the default worker path
  (which may decode at a reduced DCT scale).

    python benchmarks/decode_diff.py [--corpus ../shared/corpus]     (writes benchmarks/results/decode_diff.json)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import CORPUS, machine, write_result

from pass_wds.augment import load_recipe
from pass_wds.augment.geometry import random_resized_crop_box
from pass_wds.decoding import Crop, DecodeError, DecodeOptions, open_image
from pass_wds.loading.pipeline import collate


def corpus_images(corpus: Path) -> list[tuple[str, bytes]]:
    files = sorted((corpus / "photos").iterdir()) + sorted((corpus / "hard-images").iterdir())
    return [(f.name, f.read_bytes()) for f in files if f.is_file()]


def fast_vs_accurate(images: list[tuple[str, bytes]]) -> dict[str, Any]:
    ref, new, fast = (
        DecodeOptions(jpeg_backend="torchvision"),
        DecodeOptions(),
        DecodeOptions(jpeg_mode="fast"),
    )
    rng = np.random.default_rng(0)
    identical, maes = 0, []
    for _, data in images:
        try:
            a = open_image(data, ref)
            crops = [
                Crop(random_resized_crop_box(a.width, a.height, (0.08, 1), (3 / 4, 4 / 3), rng), (224, 224))
                for _ in range(2)
            ]
            ra = a.crops(crops)
        except DecodeError:
            continue
        rb, rc = open_image(data, new).crops(crops), open_image(data, fast).crops(crops)
        identical += all(torch.equal(x, y) for x, y in zip(ra, rb, strict=True))
        maes.append(
            float(np.mean([(x.float() - y.float()).abs().mean() for x, y in zip(ra, rc, strict=True)]))
        )
    return {
        "images": len(maes),
        "accurate_identical_to_reference": identical,
        "fast_mae_mean": float(np.mean(maes)),
        "fast_mae_max": float(np.max(maes)),
    }


def device_vs_worker(images: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Plain JPEGs of the photos only (others are decoded in the worker on both paths: identical)."""
    spec = {"name": "crops", "views": [{"count": 2, "size": 224, "scale": [0.08, 1.0]}]}
    worker, full, device = load_recipe(spec), load_recipe(spec), load_recipe(spec, decode="device")
    full.decode_options = DecodeOptions(draft=False)  # type: ignore[union-attr]
    per_default, per_full = [], []
    for i, (_, data) in enumerate(images):
        try:
            src = open_image(data)
        except DecodeError:
            continue
        if not src.plain_jpeg:
            continue
        out = device.worker_sample(data, "jpg", np.random.default_rng(i))  # type: ignore[union-attr]
        batch = device.finish_batch(collate([out], [{"__key__": "k", "__url__": "u"}]))  # type: ignore[union-attr]
        try:
            got = device.device_stage(batch, "cpu", generator=0, normalize_output=False)["views"]
        except DecodeError:
            continue
        got = [g[0] * 255.0 for g in got]
        for store, rec in ((per_default, worker), (per_full, full)):
            ref = rec(data, "jpg", np.random.default_rng(i))["views"]  # type: ignore[operator]
            store.append(max(float((r.float() - g).abs().mean()) for r, g in zip(ref, got, strict=True)))
    return {
        "images": len(per_full),
        "vs_full_size_worker_mae_mean": float(np.mean(per_full)),
        "vs_full_size_worker_mae_max": float(np.max(per_full)),
        "vs_default_worker_mae_mean": float(np.mean(per_default)),
        "vs_default_worker_mae_max": float(np.max(per_default)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(CORPUS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = corpus_images(Path(args.corpus))
    record = {
        "machine": machine(),
        "command": " ".join(sys.argv),
        "fast_vs_accurate": fast_vs_accurate(images),
        "device_vs_worker": device_vs_worker(images),
    }
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=2))
    write_result("decode_diff", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
