"""GPU section: the device stage's colour throughput and end-to-end images/s into a tiny training step.

Skipped, with ``skipped: no CUDA device`` (and a JSON saying so), when CUDA is absent.

* **device stage**: ``Recipe.device_stage`` (per-sample colour jitter, grayscale, blur, solarize +
  normalise as batched tensor ops) at batch 256 for every built-in recipe, on batches of real worker output
  (``bench_augment.run_cuda``);
* **end to end** (simclr, batch 256, all cores but one as workers, pinned memory):
  ``loader``: the loader with the device stage, nothing else; ``train``: loader + a SimCLR step of the tiny
  ResNet from ``scripts/train_ssl.py`` (forward, NT-Xent, backward, SGD) at 96 px; ``step only``: the same
  training step on one fixed batch already on the GPU (the model's own ceiling). ``train`` / ``min(loader,
  step only)`` says how well loading overlaps training.

    python benchmarks/bench_gpu.py --source SHARDS/index.json [--seconds 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "scripts"))

from _common import machine, machine_line, table  # noqa: E402


def sample_jpegs(source: str, n: int = 256) -> list[bytes]:
    """The first ``n`` images of the shards (the device-stage input is real worker output on them)."""
    from pass_wds.loading import IndexCache, read_samples, resolve_source
    from pass_wds.loading.pipeline import image_member
    from pass_wds.loading.plan import shard_offsets

    shards = resolve_source(source)
    counts = tuple(s.nsamples for s in shards)
    gids = list(range(min(n, sum(counts))))
    out = []
    for _, s in read_samples(gids, shard_offsets(counts), IndexCache(shards, None)):
        m = image_member(s)
        if m is not None:
            out.append(m[1])
    return out


def end_to_end(source: str, seconds: float, batch_size: int, workers: int) -> dict[str, dict[str, float]]:
    from train_ssl import TinyResNet, nt_xent

    from pass_wds import make_loader

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    model = TinyResNet(width=32).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(views: list[torch.Tensor]) -> None:
        v1, v2 = (F.interpolate(v, size=96, mode="bilinear", antialias=False) for v in views)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nt_xent(model(v1), model(v2), 0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run(train: bool) -> dict[str, float]:
        # A resampled epoch long enough that the window never crosses an epoch boundary (worker restart).
        loader = make_loader(
            source,
            batch_size=batch_size,
            recipe="simclr",
            num_workers=workers,
            device="cuda",
            pin_memory=True,
            prefetch_factor=2,
            epoch_samples=200 * batch_size * max(1, workers) // 4,
        )
        it = iter(loader)
        t0 = time.perf_counter()
        batch = next(it)
        if train:
            step(batch["views"])
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        # the batches the workers prefetched while the first was made arrive at once: steady state after them
        for _ in range(2 * workers):
            batch = next(it)
            if train:
                step(batch["views"])
        torch.cuda.synchronize()
        n, t1 = 0, time.perf_counter()
        while time.perf_counter() - t1 < seconds:
            batch = next(it)
            if train:
                step(batch["views"])
            n += batch_size
        torch.cuda.synchronize()
        wall = time.perf_counter() - t1
        del it
        return {"images_per_s": n / wall, "first_batch_s": first, "images": n}

    # the training step alone, on one batch already on the GPU
    fixed = [torch.rand(batch_size, 3, 224, 224, device=dev) for _ in range(2)]
    for _ in range(5):
        step(fixed)
    torch.cuda.synchronize()
    n, t1 = 0, time.perf_counter()
    while time.perf_counter() - t1 < seconds:
        step(fixed)
        n += batch_size
    torch.cuda.synchronize()
    only = {"images_per_s": n / (time.perf_counter() - t1), "first_batch_s": 0.0, "images": n}
    loader_only = run(train=False)
    train = run(train=True)
    train["overlap"] = train["images_per_s"] / min(loader_only["images_per_s"], only["images_per_s"])
    return {"loader + device stage": loader_only, "loader + train step": train, "train step only": only}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="index.json of shards written by make-shards")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    logging.getLogger("pass_wds.loading").setLevel(logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m = machine()
    record: dict[str, Any] = {"benchmark": "gpu", "machine": m, "command": " ".join(sys.argv)}
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        record["skipped"] = "no CUDA device"
        (out / "gpu.json").write_text(json.dumps(record, indent=2) + "\n")
        return 0
    print(f"machine: {machine_line(m)}; GPU {m.get('gpu')}", flush=True)
    from bench_augment import run_cuda

    torch.set_num_threads(1)
    images = sample_jpegs(args.source)
    print(f"device stage, batch {args.batch_size}:", flush=True)
    stage = run_cuda(images, args.seconds / 2, batch=args.batch_size)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    print(f"end to end (simclr, batch {args.batch_size}, {args.workers} workers):", flush=True)
    e2e = end_to_end(args.source, args.seconds, args.batch_size, args.workers)
    rows = [{"case": k, **v} for k, v in stage.items()] + [{"case": k, **v} for k, v in e2e.items()]
    print(
        table(
            rows,
            [
                ("case", "case", ""),
                ("images_per_s", "images/s", ".0f"),
                ("first_batch_s", "first batch s", ".2f"),
            ],
        )
    )
    record.update(
        {
            "batch_size": args.batch_size,
            "workers": args.workers,
            "device_stage": stage,
            "end_to_end": e2e,
        }
    )
    path = out / "gpu.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
