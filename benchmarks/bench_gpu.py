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
* **decode** (issue 12): ``nvjpeg floor``: torchvision's batched ``decode_jpeg(list, device="cuda")`` on the
  shards' own JPEGs, decode only, batch 256 (the rate device decode is compared with); ``simclr`` loader +
  device stage with ``decode="accurate"`` (CPU decode in the workers) and ``decode="device"`` (batched
  nvJPEG + roi_align crops on the GPU) at ``--decode-workers`` (2 4 8 15, capped at the cores - 1), each
  with the workers' CPU ms per image and the peak GPU memory; then loader + a ResNet-50 SimCLR step
  (torchvision ``resnet50``, channels-last, bf16 autocast, NT-Xent on the 1000-d outputs, SGD) for both
  decodes at the largest worker count, and the ResNet-50 step alone.

    python benchmarks/bench_gpu.py --source SHARDS/index.json [--seconds 5] [--out benchmarks/results]
        [--decode-workers 2 4 8 15] [--sections stage,tiny,decode,resnet50]
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
from _common import load_script, machine, machine_line, table

HERE = Path(__file__).resolve().parent


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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def nvjpeg_floor(images: list[bytes], seconds: float, batch: int, device: str = "cuda") -> dict[str, float]:
    """Batched GPU decode only (torchvision ``decode_jpeg`` on a list, nvJPEG), host tensors prepared."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in images]
    batches = [[data[(i + k) % len(data)] for k in range(batch)] for i in range(0, len(data), batch)]
    for b in batches[:2]:
        decode_jpeg(b, mode=ImageReadMode.RGB, device=device)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for b in batches:
            decode_jpeg(b, mode=ImageReadMode.RGB, device=device)
            n += len(b)
    _sync(device)
    wall = time.perf_counter() - t0
    pixels = sum(int(x.shape[1] * x.shape[2]) for x in decode_jpeg(batches[0], device=device)) / batch
    return {"images_per_s": n / wall, "images": n, "mean_megapixels": pixels / 1e6, "batch": batch}


def resnet50_step(batch_size: int, device: str = "cuda") -> Any:
    """A SimCLR step of torchvision's ResNet-50 (channels-last, bf16 autocast) on a list of two views."""
    import torchvision

    nt_xent = load_script("train_ssl").nt_xent

    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True
    model = torchvision.models.resnet50().to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(views: list[torch.Tensor]) -> None:
        x = torch.cat(views).contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            z = model(x)
            loss = nt_xent(*z.float().chunk(2), 0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def loader_rate(
    source: str,
    seconds: float,
    batch_size: int,
    workers: int,
    decode: str,
    step: Any = None,
    device: str = "cuda",
) -> dict[str, float]:
    """simclr loader (+ device stage) images/s with ``decode``, optionally feeding ``step``; with the workers'
    CPU ms per image and the peak GPU memory of the run."""
    import psutil

    from pass_wds import make_loader

    on_cuda = device == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    loader = make_loader(
        source,
        batch_size=batch_size,
        recipe="simclr",
        decode=decode,
        num_workers=workers,
        device=device,
        pin_memory=on_cuda,
        prefetch_factor=2,
        epoch_samples=400 * batch_size * max(1, workers) // 4,  # never crosses an epoch in the window
    )
    it = iter(loader)
    t0 = time.perf_counter()
    batch = next(it)
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(2 * workers + 2):
        batch = next(it)
        if step is not None:
            step(batch["views"])
    _sync(device)
    me = psutil.Process()

    def workers_cpu() -> float:
        total = 0.0
        for c in me.children(recursive=True):
            try:
                t = c.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    cpu0 = workers_cpu()
    n, t1 = 0, time.perf_counter()
    while time.perf_counter() - t1 < seconds:
        batch = next(it)
        if step is not None:
            step(batch["views"])
        n += batch_size
    _sync(device)
    wall = time.perf_counter() - t1
    cpu = workers_cpu() - cpu0
    del it, loader, batch
    return {
        "images_per_s": n / wall,
        "first_batch_s": first,
        "images": n,
        "workers": workers,
        "worker_cpu_ms_per_image": 1e3 * cpu / max(n, 1),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if on_cuda else float("nan"),
    }


def decode_section(
    source: str,
    seconds: float,
    batch_size: int,
    worker_counts: list[int],
    resnet: bool,
    device: str = "cuda",
) -> dict[str, Any]:
    """The issue-12 figures: nvJPEG floor, CPU vs device decode per worker count, ResNet-50 training."""
    images = sample_jpegs(source, 1024)
    out: dict[str, Any] = {"nvjpeg floor": nvjpeg_floor(images, seconds / 2, batch_size, device)}
    print(
        f"  nvjpeg floor (batch {batch_size}): {out['nvjpeg floor']['images_per_s']:.0f} images/s", flush=True
    )
    for decode in ("accurate", "device"):
        for w in worker_counts:
            r = loader_rate(source, seconds, batch_size, w, decode, device=device)
            out[f"simclr {decode} w{w}"] = r
            print(
                f"  simclr decode={decode:8s} w{w:<2d} {r['images_per_s']:8.0f} images/s  worker CPU "
                f"{r['worker_cpu_ms_per_image']:.3f} ms/image  peak GPU {r['peak_gpu_mb']:.0f} MB",
                flush=True,
            )
    floor = out["nvjpeg floor"]["images_per_s"]
    for w in worker_counts:
        out[f"simclr device w{w}"]["fraction_of_nvjpeg_floor"] = (
            out[f"simclr device w{w}"]["images_per_s"] / floor
        )
    if resnet:
        step = resnet50_step(batch_size, device)
        fixed = [torch.rand(batch_size, 3, 224, 224, device=device) for _ in range(2)]
        for _ in range(5):
            step(fixed)
        _sync(device)
        n, t1 = 0, time.perf_counter()
        while time.perf_counter() - t1 < seconds:
            step(fixed)
            n += batch_size
        _sync(device)
        out["resnet50 step only"] = {"images_per_s": n / (time.perf_counter() - t1), "images": n}
        print(f"  resnet50 step only: {out['resnet50 step only']['images_per_s']:.0f} images/s", flush=True)
        w = max(worker_counts)
        for decode in ("accurate", "device"):
            r = loader_rate(source, seconds, batch_size, w, decode, step, device)
            out[f"resnet50 train {decode} w{w}"] = r
            print(
                f"  loader + resnet50 step, decode={decode} w{w}: {r['images_per_s']:.0f} images/s",
                flush=True,
            )
    return out


def end_to_end(source: str, seconds: float, batch_size: int, workers: int) -> dict[str, dict[str, float]]:
    train_ssl = load_script("train_ssl")
    TinyResNet, nt_xent = train_ssl.TinyResNet, train_ssl.nt_xent

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
    ap.add_argument("--decode-workers", type=int, nargs="+", default=[2, 4, 8, 15])
    ap.add_argument("--sections", default="stage,tiny,decode,resnet50")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
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
    stage: dict[str, Any] = {}
    e2e: dict[str, Any] = {}
    decode: dict[str, Any] = {}
    if "stage" in sections:
        images = sample_jpegs(args.source)
        print(f"device stage, batch {args.batch_size}:", flush=True)
        stage = run_cuda(images, args.seconds / 2, batch=args.batch_size)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    if "tiny" in sections:
        print(f"end to end (simclr, batch {args.batch_size}, {args.workers} workers):", flush=True)
        e2e = end_to_end(args.source, args.seconds, args.batch_size, args.workers)
    if "decode" in sections:
        counts = sorted({min(w, max(1, (os.cpu_count() or 2) - 1)) for w in args.decode_workers})
        print(f"decode (simclr, batch {args.batch_size}, workers {counts}):", flush=True)
        decode = decode_section(args.source, args.seconds, args.batch_size, counts, "resnet50" in sections)
    rows = [{"case": k, **v} for k, v in stage.items()] + [{"case": k, **v} for k, v in e2e.items()]
    rows += [{"case": k, **v} for k, v in decode.items()]
    print(
        table(
            rows,
            [
                ("case", "case", ""),
                ("images_per_s", "images/s", ".0f"),
                ("first_batch_s", "first batch s", ".2f"),
                ("worker_cpu_ms_per_image", "worker CPU ms/image", ".3f"),
                ("peak_gpu_mb", "peak GPU MB", ".0f"),
            ],
        )
    )
    record.update(
        {
            "batch_size": args.batch_size,
            "workers": args.workers,
            "device_stage": stage,
            "end_to_end": e2e,
            "decode": decode,
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
        }
    )
    path = out / "gpu.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
