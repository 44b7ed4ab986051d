"""Per-core throughput of decoding + SimCLR augmentation, against the plain PIL + torchvision pipeline.

One run, same images, one thread (``torch.set_num_threads(1)``), one process:

  (a) baseline  PIL decode + torchvision SimCLR transforms on PIL images (two views), ToTensor, Normalize —
                what a webdataset README user writes (``.decode("pil").map(transform)``)
  (b) worker    our simclr worker side: header, crop sampling, (draft) decode, resize, flip → uint8 views
  (b+dev)       (b) plus the device stage run on this same CPU core (batched colour + normalise, batch 64)
  (c) cpu-e2e   our simclr with ``colour: cpu`` (fused colour in the worker) + batched normalise
  (d) decode    decode only: full upright RGB tensor (our decode path), and PIL ``Image.open().convert``

Images: the corpus photos resized in memory to a long side <= 500 px and re-encoded as JPEG q90, like PASS.
``--device cuda`` instead measures ``Recipe.device_stage`` images/s at batch 256 on the GPU per recipe.

    python benchmarks/bench_augment.py [--corpus DIR] [--seconds 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pass_wds.augment import load_recipe
from pass_wds.decoding import decode_tensor

REPO = Path(__file__).resolve().parent.parent


def pass_like_images(corpus: Path, long_side: int = 500) -> list[bytes]:
    out = []
    for path in sorted((corpus / "photos").iterdir()):
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((long_side, long_side), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
    return out


def synthetic_images(n: int = 32, seed: int = 0) -> list[bytes]:
    """Stand-ins when the corpus is absent (e.g. on a bare GPU machine): smooth colour fields plus noise,
    500x375 JPEG q90. Only the device-stage timing uses them; pixel content barely matters there."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:375, 0:500] / 500.0
    out = []
    for _ in range(n):
        a = rng.uniform(0, 6, (3, 3))
        img = np.stack([np.sin(a[c, 0] * xx + a[c, 1] * yy + a[c, 2]) for c in range(3)], axis=2)
        img = np.clip((img * 0.4 + 0.5) * 255 + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def baseline_transform() -> Callable[[Image.Image], torch.Tensor]:
    import torchvision.transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(224, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )


def interleaved_rates(
    cases: dict[str, Callable[[], int]], seconds: float, rounds: int = 5
) -> dict[str, dict[str, float]]:
    """Images per CPU-second (this process's CPU time, one thread: the per-core rate) and per wall second.

    Cases run round-robin (``rounds`` rounds of about ``seconds / rounds`` each), so a change in background
    load during the run affects every case alike; CPU time is less sensitive to other processes than wall
    time on a shared machine, so it is the primary figure.
    """
    for fn in cases.values():
        fn()  # warm-up
    done = dict.fromkeys(cases, 0)
    cpu = dict.fromkeys(cases, 0.0)
    wall = dict.fromkeys(cases, 0.0)
    for _ in range(rounds):
        for name, fn in cases.items():
            n, t0, c0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < seconds / rounds:
                n += fn()
            done[name] += n
            cpu[name] += time.process_time() - c0
            wall[name] += time.perf_counter() - t0
    return {
        name: {
            "images_per_s": done[name] / cpu[name],
            "images_per_wall_s": done[name] / wall[name],
            "images": done[name],
            "cpu_seconds": cpu[name],
            "wall_seconds": wall[name],
        }
        for name in cases
    }


def run_cpu(images: list[bytes], seconds: float) -> dict[str, Any]:
    tf = baseline_transform()
    simclr = load_recipe("simclr")
    simclr_cpu = load_recipe("simclr", colour="cpu")
    rng = np.random.default_rng(0)
    batch = 64

    def baseline() -> int:
        for d in images:
            img = Image.open(io.BytesIO(d)).convert("RGB")
            _ = (tf(img), tf(img))
        return len(images)

    def worker() -> int:
        for d in images:
            simclr(d, "jpg", rng)
        return len(images)

    def collate_and_device(recipe: Any, outs: list[dict[str, Any]]) -> None:
        for i in range(0, len(outs), batch):
            chunk = outs[i : i + batch]
            views = [torch.stack([o["views"][v] for o in chunk]) for v in range(2)]
            recipe.device_stage({"views": views}, "cpu", generator=rng)

    def worker_plus_device() -> int:
        outs = [simclr(d, "jpg", rng) for d in images]
        collate_and_device(simclr, outs)
        return len(images)

    def cpu_e2e() -> int:
        outs = [simclr_cpu(d, "jpg", rng) for d in images]
        collate_and_device(simclr_cpu, outs)
        return len(images)

    def decode_ours() -> int:
        for d in images:
            decode_tensor(d)
        return len(images)

    def decode_pil() -> int:
        for d in images:
            Image.open(io.BytesIO(d)).convert("RGB")
        return len(images)

    cases = {
        "a_baseline_pil_torchvision": baseline,
        "b_worker_simclr": worker,
        "b_worker_plus_device_stage_on_cpu": worker_plus_device,
        "c_cpu_end_to_end_simclr": cpu_e2e,
        "d_decode_only": decode_ours,
        "d_decode_only_pil": decode_pil,
    }
    results = interleaved_rates(cases, seconds)
    base = results["a_baseline_pil_torchvision"]["images_per_s"]
    for r in results.values():
        r["ratio_vs_baseline"] = r["images_per_s"] / base
    return results


def _pinned(t: torch.Tensor, pin: bool) -> torch.Tensor:
    return t.pin_memory() if pin else t


def run_cuda(
    images: list[bytes], seconds: float, batch: int = 256, device_name: str = "cuda"
) -> dict[str, Any]:
    """device_stage images/s at ``batch`` on the GPU (host→device copy of the uint8 batch included), and the
    largest difference between the GPU and CPU results for the same batch and generator seed."""
    device = torch.device(device_name)
    pin = device.type == "cuda"
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {}
    for name in ("simclr", "mocov2", "byol", "dino", "swav", "eval"):
        recipe = load_recipe(name)
        outs = [recipe(images[i % len(images)], "jpg", rng) for i in range(batch)]
        key = recipe.output_key
        if key == "image":
            cpu_batch: dict[str, Any] = {"image": _pinned(torch.stack([o["image"] for o in outs]), pin)}
        else:
            cpu_batch = {
                "views": [
                    _pinned(torch.stack([o["views"][v] for o in outs]), pin) for v in range(recipe.num_views)
                ]
            }
        small = {k: (v[:16] if key == "image" else [t[:16] for t in v]) for k, v in cpu_batch.items()}
        on_gpu = recipe.device_stage(small, device, generator=123)[key]
        on_cpu = recipe.device_stage(small, "cpu", generator=123)[key]
        pairs = [(on_gpu, on_cpu)] if key == "image" else list(zip(on_gpu, on_cpu, strict=True))
        max_diff = max(float((g.cpu() - c).abs().max()) for g, c in pairs)

        def step(recipe: Any = recipe, cpu_batch: dict[str, Any] = cpu_batch) -> int:
            recipe.device_stage(cpu_batch, device, generator=rng)
            if pin:
                torch.cuda.synchronize()
            return batch

        label = f"device_stage_{name}_b{batch}"
        results.update(interleaved_rates({label: step}, seconds, rounds=2))
        results[label]["images_per_s"] = results[label]["images_per_wall_s"]  # GPU: wall time is the measure
        results[label]["max_abs_diff_gpu_vs_cpu"] = max_diff
        print(
            f"  {name}: {results[label]['images_per_s']:.0f} images/s, |gpu-cpu| max {max_diff:.2e}",
            flush=True,
        )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--corpus", default=os.environ.get("PASS_WDS_CORPUS", str(REPO.parent / "shared" / "corpus"))
    )
    ap.add_argument(
        "--seconds", type=float, default=10.0, help="measured time per case (split over 5 rounds)"
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    corpus = Path(args.corpus)
    synthetic = not (corpus / "photos").is_dir()
    images = synthetic_images() if synthetic else pass_like_images(corpus)
    if synthetic:
        print(f"corpus not found at {corpus}: using synthetic 500x375 JPEGs", flush=True)
    print(
        f"{len(images)} PASS-like JPEGs (long side <= 500), mean {np.mean([len(d) for d in images]) / 1e3:.1f} kB; "
        f"torch {torch.__version__}, 1 thread",
        flush=True,
    )
    results = run_cpu(images, args.seconds) if args.device == "cpu" else run_cuda(images, args.seconds)

    print()
    print(f"{'case':42s} {'images/cpu-s':>13s} {'ratio vs (a)':>13s} {'images/wall-s':>14s}")
    for name, r in results.items():
        ratio = f"{r['ratio_vs_baseline']:.1f}x" if "ratio_vs_baseline" in r else "-"
        print(f"{name:42s} {r['images_per_s']:13.1f} {ratio:>13s} {r['images_per_wall_s']:14.1f}")
    if args.device == "cpu":
        b = results["b_worker_simclr"]["ratio_vs_baseline"]
        c = results["c_cpu_end_to_end_simclr"]["ratio_vs_baseline"]
        print(
            f"\ntargets: (b) >= 10x: {b:.1f}x {'OK' if b >= 10 else 'MISSED'}; (c) >= 4x: {c:.1f}x {'OK' if c >= 4 else 'MISSED'}"
        )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "bench_augment",
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor(),
        },
        "torch": torch.__version__,
        "images": len(images),
        "synthetic_images": synthetic,
        "threads": 1,
        "seconds_per_repeat": args.seconds,
        "results": results,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = out / f"bench_augment_{args.device}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
