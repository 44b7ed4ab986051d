"""Loader: pass-wds against the pipelines a user would otherwise write, on the same images, in one run.

Pipelines (each a torch DataLoader with ``W`` worker processes, batch ``--batch-size``):

* ``pass-wds``   ``make_loader(index.json, recipe=…)``; recipes: ``decode`` (full-size RGB decode only: the CPU
                 floor), ``eval``, ``simclr`` (worker side: uint8 views, colour left for the device stage),
                 ``simclr-cpu`` (CPU-only end to end: fused colour in the workers + normalise), ``dino``
                 (worker side: 2 global + 8 local crops); ``eval-nocheck`` (eval without the per-sample crc32
                 check, ``verify_samples=False``: its cost, measured in the same run);
* ``webdataset`` ``wds.WebDataset(urls, shardshuffle=…).shuffle(1000).decode("pil").to_tuple("jpg", "__key__")
                 .map_tuple(transform, identity)`` as webdataset's README suggests, torchvision transforms;
* ``imagefolder`` torchvision ``ImageFolder`` over the extracted JPEG files, same transforms;
* ``litdata``    LitData ``StreamingDataset`` over its own ``optimize()``d copy, same transforms
                 (``StreamingDataLoader``);
* ``dali``       an NVIDIA DALI CPU pipeline (``device_id=None``, ``W`` threads): ``fn.readers.webdataset`` over
                 the same shards with their ``.idx`` files → ``decode``: ``fn.decoders.image``; ``eval``:
                 decode → resize shorter 256 → centre crop 224 → normalise; ``simclr``: per view
                 ``fn.decoders.image_random_crop`` (decodes the crop region only) → resize 224 → flip →
                 ``color_twist`` (p 0.8) → grayscale (p 0.2) → ``gaussian_blur(23)`` (p 0.5) → normalise, two
                 views. ``nvidia-dali-cuda120`` runs CPU pipelines without a GPU.

``decode`` modes of ours: ``decode``/``simclr``/``simclr-cpu`` decode accurately (the default);
``decode-fast``/``simclr-fast``/``simclr-cpu-fast`` with ``decode="fast"``; ``simclr-device`` with
``decode="device", device="cpu"`` (the device stage's batched decode + roi_align crops on the CPU, in the
main process: it reports the workers' own CPU time per image, the figure that matters on a GPU node).

The torchvision transforms are the published ones (SimCLR: RandomResizedCrop, flip, ColorJitter(0.8, 0.8,
0.8, 0.2) p 0.8, grayscale 0.2, GaussianBlur(23) p 0.5; DINO: its DataAugmentationDINO with PIL blur and
solarize; eval: Resize 256, CenterCrop 224), always ending with ToTensor + Normalize. The baselines' SimCLR is
compared with both our ``simclr`` (worker side) and ``simclr-cpu`` (end to end).

Each case runs for ``--seconds`` after its first batch; we count images per wall second and per CPU second of
the whole process tree (main + workers: the per-core rate, robust against other load on a shared machine),
and the time to the first batch. Cases run round-robin ``--repeats`` times; medians are reported, with
ratios against the baselines of the same round. Also measured: peak RSS of each worker and of the main
process over several epochs (growth check), and streaming the same shards from a local moto S3 server
versus local disk.

    python benchmarks/bench_loader.py [--images 20000 | --quick] [--workers 1 2] [--seconds 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from _common import (
    DATA,
    FULL_IMAGES,
    QUICK_IMAGES,
    REPO,
    machine,
    machine_line,
    median,
    raw_bytes,
    raw_dataset,
    table,
    write_result,
)
from PIL import Image, ImageFilter, ImageOps

OURS_RECIPES = (
    "decode", "decode-fast", "eval", "simclr", "simclr-fast", "simclr-cpu", "simclr-cpu-fast", "simclr-device",
    "dino",
)  # fmt: skip
# eval-nocheck: eval with verify_samples=False, to measure the per-sample checksum check in the same run
EXTRA_RECIPES = ("eval-nocheck",)
BASELINE_RECIPES = ("decode", "eval", "simclr", "dino")
BASELINES = ("webdataset", "webdataset-ftz", "dali", "spdl", "floor", "imagefolder", "litdata")
# the others run every baseline recipe
BASELINE_SUPPORTS = {"dali": ("decode", "eval", "simclr"), "spdl": ("decode", "simclr"), "floor": ("decode",)}
# which baseline recipe each of our recipes is compared with
BASELINE_OF = {
    "decode": "decode", "decode-fast": "decode", "eval": "eval", "eval-nocheck": "eval", "simclr": "simclr",
    "simclr-fast": "simclr", "simclr-cpu": "simclr", "simclr-cpu-fast": "simclr", "simclr-device": "simclr", "dino": "dino",
}  # fmt: skip


# ------------------------------------------------------------------------------------------- data copies


def prepare(images: int, photos: bool = False, baselines: tuple[str, ...] = BASELINES) -> dict[str, Any]:
    """Raw set → make-shards output, extracted files (ImageFolder) and a LitData copy, each made once (the
    copies only for the baselines that read them)."""
    import subprocess

    raw = raw_dataset(images, photos=photos)
    tag = f"{'photos-' if photos else ''}{images}"
    shards = DATA / f"shards-{tag}"
    if not (shards / "index.json").is_file():
        from pass_wds import ConvertConfig, make_shards

        target = max(raw_bytes(raw) // 16, 1_000_000)  # >= 16 shards, so every worker gets several
        make_shards(
            ConvertConfig(
                inputs=sorted(str(p) for p in raw.glob("PASS.*.tar")),
                metadata=str(raw / "pass_metadata.csv"),
                output=str(shards),
                shard_size=str(target),
                workers=os.cpu_count() or 1,
                validate=False,
                overwrite=True,
                progress=False,
            )
        )
    index = json.loads((shards / "index.json").read_text())
    urls = [str(shards / s["url"]) for s in index["shardlist"]]
    extracted = DATA / f"extracted-{tag}"
    if "imagefolder" in baselines and not (extracted / ".done").is_file():
        import tarfile

        (extracted / "pass").mkdir(parents=True, exist_ok=True)
        for url in urls:
            with tarfile.open(url) as tf:
                for m in tf:
                    if m.name.endswith(".jpg"):
                        (extracted / "pass" / m.name).write_bytes(tf.extractfile(m).read())  # type: ignore[union-attr]
        (extracted / ".done").write_text("ok\n")
    lit = DATA / f"litdata-{tag}"
    if "litdata" in baselines and not (lit / "index.json").is_file():
        script = REPO / "benchmarks" / "baselines" / "litdata_optimize.py"
        subprocess.run(
            [sys.executable, str(script), str(raw), str(lit), str(os.cpu_count() or 1)], check=True
        )
    mean_bytes = sum(s["filesize"] for s in index["shardlist"]) / index["totals"]["samples"]
    return {
        "raw": raw,
        "index": str(shards / "index.json"),
        "urls": urls,
        "extracted": extracted,
        "litdata": lit,
        "samples": index["totals"]["samples"],
        "mean_sample_bytes": mean_bytes,
    }


# ------------------------------------------------------------------------------ torchvision transforms


def _normalize() -> Any:
    import torchvision.transforms as T

    return T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


class PILBlur:
    """DINO's GaussianBlur: PIL's filter with a random radius, applied with probability p."""

    def __init__(self, p: float, radius: tuple[float, float] = (0.1, 2.0)) -> None:
        self.p, self.radius = p, radius

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.radius)))


class Solarize:
    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img) if random.random() < self.p else img


class Views:
    """Several independent transforms of one image (multi-view SSL)."""

    def __init__(self, transforms: list[Callable[[Image.Image], torch.Tensor]]) -> None:
        self.transforms = transforms

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        return [t(img) for t in self.transforms]


def decoded_shape(img: Image.Image) -> tuple[int, ...]:
    """Decode only: the full RGB pixels are made in the worker, like our ``decode`` recipe, and only their
    shape goes back to the main process (so neither side pays for shipping full-size images)."""
    return np.asarray(img.convert("RGB")).shape


def baseline_transform(recipe: str) -> Callable[[Image.Image], Any]:
    """The torchvision/PIL transform a user writes for ``recipe`` (on a decoded RGB PIL image)."""
    import torchvision.transforms as T

    if recipe == "decode":
        return decoded_shape
    if recipe == "eval":
        return T.Compose([T.Resize(256), T.CenterCrop(224), _normalize()])
    if recipe == "simclr":
        from bench_augment import baseline_transform as simclr_transform

        tf = simclr_transform()
        return Views([tf, tf])
    if recipe == "dino":
        bicubic = T.InterpolationMode.BICUBIC
        flip_colour = T.Compose(
            [
                T.RandomHorizontalFlip(p=0.5),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
            ]
        )
        g1 = T.Compose(
            [
                T.RandomResizedCrop(224, scale=(0.4, 1.0), interpolation=bicubic),
                flip_colour,
                PILBlur(1.0),
                _normalize(),
            ]
        )
        g2 = T.Compose(
            [
                T.RandomResizedCrop(224, scale=(0.4, 1.0), interpolation=bicubic),
                flip_colour,
                PILBlur(0.1),
                Solarize(0.2),
                _normalize(),
            ]
        )
        local = T.Compose([T.RandomResizedCrop(96, scale=(0.05, 0.4), interpolation=bicubic), flip_colour, PILBlur(0.5), _normalize()])  # fmt: skip
        return Views([g1, g2] + [local] * 8)
    raise ValueError(f"no baseline transform for {recipe!r}")


def _identity(x: Any) -> Any:
    return x


def list_collate(batch: list[Any]) -> list[Any]:
    """Decode-only batches hold images of different sizes: keep them as a list."""
    return batch


def _collate_for(recipe: str) -> Any:
    return list_collate if recipe == "decode" else None


# ------------------------------------------------------------------------------------------- pipelines


def decode_only_fast(data: bytes, ext: str, rng: np.random.Generator) -> dict[str, Any]:
    """``pass_wds.bench.decode_only`` with ``decode="fast"`` (fast IDCT, plain upsampling; full size)."""
    from pass_wds.decoding import DecodeOptions, decode_tensor

    return {"shape": tuple(decode_tensor(data, DecodeOptions(jpeg_mode="fast")).shape)}


def ours(data: dict[str, Any], recipe: str, workers: int, batch_size: int) -> Iterable[Any]:
    from pass_wds import make_loader
    from pass_wds.augment import CallableRecipe, load_recipe
    from pass_wds.bench import decode_only

    device = None
    verify = recipe != "eval-nocheck"
    if recipe in ("decode", "decode-fast"):
        rec: Any = CallableRecipe(decode_only if recipe == "decode" else decode_only_fast)
    elif recipe in ("simclr-cpu", "simclr-cpu-fast"):
        decode = "fast" if recipe.endswith("-fast") else "accurate"
        rec, device = load_recipe("simclr", colour="cpu", decode=decode), "cpu"
    elif recipe == "simclr-fast":
        rec = load_recipe("simclr", decode="fast")
    elif recipe == "simclr-device":
        rec, device = load_recipe("simclr", decode="device"), "cpu"
    else:
        rec = load_recipe(recipe.removesuffix("-nocheck"))
    return make_loader(
        data["index"],
        batch_size=batch_size,
        recipe=rec,
        num_workers=workers,
        device=device,
        verify_samples=verify,
    )


def webdataset_pipeline(data: dict[str, Any], recipe: str, workers: int, batch_size: int) -> Iterable[Any]:
    import webdataset as wds

    ds = (
        wds.WebDataset(data["urls"], shardshuffle=len(data["urls"]), empty_check=False)
        .shuffle(1000)
        .decode("pil")
        .to_tuple("jpg", "__key__")
        .map_tuple(baseline_transform(recipe), _identity)
    )
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate_for(recipe)
    )


def imagefolder_pipeline(data: dict[str, Any], recipe: str, workers: int, batch_size: int) -> Iterable[Any]:
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(data["extracted"]), transform=baseline_transform(recipe))
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=_collate_for(recipe)
    )


class _LitImages:
    """Wraps LitData's StreamingDataset: decode the stored JPEG bytes with PIL, then the transform."""

    @staticmethod
    def make(input_dir: str, transform: Callable[[Image.Image], Any]) -> Any:
        from litdata import StreamingDataset

        class LitImages(StreamingDataset):  # type: ignore[misc]
            def __getitem__(self, index: Any) -> Any:
                item = super().__getitem__(index)
                img = Image.open(io.BytesIO(item["jpg"])).convert("RGB")
                return transform(img), item["key"]

        return LitImages(input_dir, shuffle=True)


def litdata_pipeline(data: dict[str, Any], recipe: str, workers: int, batch_size: int) -> Iterable[Any]:
    from litdata import StreamingDataLoader

    ds = _LitImages.make(str(data["litdata"]), baseline_transform(recipe))
    return StreamingDataLoader(
        ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate_for(recipe)
    )


class _DaliBatches:
    """A built DALI pipeline as an iterable of batches (one epoch of the shards per ``iter()``); a batch is
    ``{"__key__": [...]}`` sized like the pipeline's output (the outputs stay in DALI's buffers)."""

    def __init__(self, pipe: Any, batch_size: int, samples: int) -> None:
        self.pipe, self.batch_size, self.samples = pipe, batch_size, samples

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _ in range(max(1, self.samples // self.batch_size)):
            out = self.pipe.run()
            yield {"__key__": [None] * len(out[0])}


def dali_pipeline(data: dict[str, Any], recipe: str, workers: int, batch_size: int) -> Iterable[Any]:
    """The DALI CPU pipeline for ``recipe`` (see the module docstring) with ``workers`` threads."""
    from nvidia.dali import fn, pipeline_def, types

    urls = data["urls"]
    idx = [u[: -len(".tar")] + ".idx" for u in urls]
    mean = [255 * m for m in (0.485, 0.456, 0.406)]
    std = [255 * s for s in (0.229, 0.224, 0.225)]

    def read() -> Any:
        return fn.readers.webdataset(
            paths=urls, index_paths=idx, ext=["jpg"], random_shuffle=True, initial_fill=1000, name="Reader"
        )

    def simclr_view(jpegs: Any) -> Any:
        img = fn.decoders.image_random_crop(
            jpegs,
            device="cpu",
            output_type=types.RGB,
            random_area=[0.08, 1.0],
            random_aspect_ratio=[0.75, 4 / 3],
        )
        img = fn.resize(img, resize_x=224, resize_y=224)
        img = fn.flip(img, horizontal=fn.random.coin_flip())
        if fn.random.coin_flip(probability=0.8):
            img = fn.color_twist(
                img,
                brightness=fn.random.uniform(range=[0.2, 1.8]),
                contrast=fn.random.uniform(range=[0.2, 1.8]),
                saturation=fn.random.uniform(range=[0.2, 1.8]),
                hue=fn.random.uniform(range=[-72.0, 72.0]),  # degrees: 0.2 of the hue circle
            )
        if fn.random.coin_flip(probability=0.2):
            img = fn.color_twist(img, saturation=0.0)
        if fn.random.coin_flip(probability=0.5):
            img = fn.gaussian_blur(img, window_size=23, sigma=fn.random.uniform(range=[0.1, 2.0]))
        return fn.crop_mirror_normalize(img, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std)

    @pipeline_def(enable_conditionals=True)  # type: ignore[misc]
    def pipe() -> Any:
        jpegs = read()
        if recipe == "decode":
            return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        if recipe == "eval":
            img = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
            img = fn.resize(img, resize_shorter=256)
            return fn.crop_mirror_normalize(
                img, crop=(224, 224), dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std
            )
        if recipe == "simclr":
            return simclr_view(jpegs), simclr_view(jpegs)
        raise ValueError(f"no DALI pipeline for {recipe!r}")

    p = pipe(batch_size=batch_size, num_threads=workers, device_id=None, seed=0, prefetch_queue_depth=2)
    p.build()
    return _DaliBatches(p, batch_size, data["samples"])


def _flush_denormal(_worker_id: int = 0) -> None:
    torch.set_flush_denormal(True)


def webdataset_ftz_pipeline(
    data: dict[str, Any], recipe: str, workers: int, batch_size: int
) -> Iterable[Any]:
    """The webdataset pipeline with flush-to-zero (``torch.set_flush_denormal(True)``) in its workers: for
    sigma below ~1.9 the 23x23 Gaussian kernel's corner weights are float32 subnormals and torchvision's blur
    runs ~7x slower without it; a careful user sets it."""
    loader = webdataset_pipeline(data, recipe, workers, batch_size)
    loader.worker_init_fn = _flush_denormal  # type: ignore[attr-defined]
    _flush_denormal()  # the main process too (and the only process with workers=0)
    return loader


def _shard_jpegs(urls: list[str]) -> Iterator[bytes]:
    import tarfile

    for url in urls:
        with tarfile.open(url) as tf:
            for m in tf:
                if m.name.endswith(".jpg"):
                    yield tf.extractfile(m).read()  # type: ignore[union-attr]


class _SpdlBatches:
    """Meta SPDL's thread pipeline (what its ImageNet example does): tar members → FFmpeg decode to RGB in
    ``workers`` threads (``spdl.io.demux_image`` + ``decode_packets``) → the transform → batches."""

    def __init__(self, urls: list[str], recipe: str, workers: int, batch_size: int) -> None:
        import spdl.io

        self.urls, self.workers, self.batch_size = urls, workers, batch_size
        self.transform = baseline_transform(recipe)
        self.decode_only = recipe == "decode"
        self.filter_desc = spdl.io.get_video_filter_desc(pix_fmt="rgb24")
        self.epoch = 0

    def _decode(self, data: bytes) -> Any:
        import spdl.io

        frames = spdl.io.decode_packets(spdl.io.demux_image(data), filter_desc=self.filter_desc)
        arr = spdl.io.to_numpy(spdl.io.convert_frames(frames))
        if self.decode_only:
            return arr.shape
        return self.transform(Image.fromarray(arr))

    def _collate(self, items: list[Any]) -> Any:
        if self.decode_only:
            return {"__key__": items}
        return {"__key__": [None] * len(items), "views": [torch.stack(v) for v in zip(*items, strict=True)]}

    def __iter__(self) -> Iterator[Any]:
        from spdl.pipeline import PipelineBuilder

        urls = list(self.urls)
        random.Random(self.epoch).shuffle(urls)
        self.epoch += 1
        pipe = (
            PipelineBuilder()
            .add_source(_shard_jpegs(urls))
            .pipe(self._decode, concurrency=self.workers, output_order="completion")
            .aggregate(self.batch_size, drop_last=True)
            .pipe(self._collate)
            .add_sink(4)
            .build(num_threads=self.workers + 1)
        )
        with pipe.auto_stop():
            yield from pipe


def spdl_pipeline(data: dict[str, Any], recipe: str, workers: int, batch_size: int) -> Iterable[Any]:
    return _SpdlBatches(data["urls"], recipe, max(1, workers), batch_size)


class _FloorBatches:
    """The decode floor: libjpeg-turbo alone (simplejpeg, accurate IDCT and upsampling as our default) on the
    same JPEG bytes, held in memory, one thread, no reading, shuffling or checks."""

    def __init__(self, urls: list[str], batch_size: int) -> None:
        self.images = list(_shard_jpegs(urls))
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[Any]:
        import simplejpeg

        for i in range(0, len(self.images) - self.batch_size + 1, self.batch_size):
            shapes = [simplejpeg.decode_jpeg(b, "RGB").shape for b in self.images[i : i + self.batch_size]]
            yield {"__key__": shapes}


def floor_pipeline(data: dict[str, Any], recipe: str, workers: int, batch_size: int) -> Iterable[Any]:
    return _FloorBatches(data["urls"], batch_size)


PIPELINES: dict[str, Callable[[dict[str, Any], str, int, int], Iterable[Any]]] = {
    "pass-wds": ours,
    "webdataset": webdataset_pipeline,
    "imagefolder": imagefolder_pipeline,
    "litdata": litdata_pipeline,
    "dali": dali_pipeline,
    "webdataset-ftz": webdataset_ftz_pipeline,
    "spdl": spdl_pipeline,
    "floor": floor_pipeline,
}


# ---------------------------------------------------------------------------------------- measurement


class _TreeCpu:
    """CPU seconds used by this process and its children (DataLoader workers) since ``__init__``.

    Tracked per pid and refreshed on every ``update()``, so workers that start or exit mid-measurement (a new
    epoch) are counted up to their last update instead of vanishing from a before/after difference."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.update(initial=True)

    def update(self, initial: bool = False) -> None:
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            cpu = t.user + t.system
            if p.pid not in self.start:
                self.start[p.pid] = cpu if initial or p.pid == self.me.pid else 0.0
            self.last[p.pid] = cpu

    def seconds(self) -> float:
        return sum(self.last[p] - self.start[p] for p in self.last)

    def main_seconds(self) -> float:
        return self.last[self.me.pid] - self.start[self.me.pid]


def in_process_decode(data: dict[str, Any], rounds: int, images: int = 1000) -> dict[str, Any]:
    """Plain decode per core with no worker processes on either side: ours with ``num_workers=0`` against
    DALI with one thread, alternating in this process (CPU time of this process only). Separates the
    decode path's own cost from the DataLoader worker machinery."""

    def per_core(make: Callable[[], Iterable[Any]]) -> float:
        it = iter(make())
        next(it)
        c, n = time.process_time(), 0
        while n < images:
            try:
                n += _batch_len(next(it))
            except StopIteration:
                it = iter(make())
        return n / (time.process_time() - c)

    runs = []
    for _ in range(rounds):
        d = per_core(lambda: dali_pipeline(data, "decode", 1, 32))
        o = per_core(lambda: ours(data, "decode", 0, 32))
        f = per_core(lambda: ours(data, "decode-fast", 0, 32))
        runs.append({"dali": d, "ours": o, "ours_fast": f, "x_dali": o / d, "x_dali_fast": f / d})
        print(f"  in-process decode: dali {d:.0f}  ours {o:.0f} ({o / d:.2f}x)  fast {f:.0f} ({f / d:.2f}x)")
    return {
        "images_per_round": images,
        "runs": runs,
        **{k: median([r[k] for r in runs]) for k in ("dali", "ours", "ours_fast", "x_dali", "x_dali_fast")},
    }


def _batch_len(batch: Any) -> int:
    """Samples in a batch of any of the pipelines: ours (dict), list-collated decode batches (list of
    (image, key) pairs), and default-collated (transformed images, keys or labels)."""
    if isinstance(batch, dict):
        return len(batch["__key__"])
    if isinstance(batch, list) and batch and isinstance(batch[0], tuple):
        return len(batch)
    return len(batch[1])


def _batches(make: Callable[[], Iterable[Any]]) -> Iterator[Any]:
    """Endless batches: a new epoch whenever one ends (the pipeline object is built once)."""
    loader = make()
    while True:
        yield from loader


def measure(
    make: Callable[[], Iterable[Any]], seconds: float, workers: int, poll_s: float = 0.0
) -> dict[str, float]:
    """Time to first batch, then images per wall second and per CPU second of the process tree.

    The workers prefetch ``workers x prefetch_factor`` (2) batches while the first one is made; those arrive
    at once (their CPU time spent before the clock starts), so the clock starts after them: steady state."""
    t0 = time.perf_counter()
    it = _batches(make)
    next(it)
    first = time.perf_counter() - t0
    for _ in range(2 * workers):
        next(it)
    t_first = time.perf_counter()
    cpu = _TreeCpu()
    n = 0
    polled = t_first
    while (now := time.perf_counter()) - t_first < seconds:
        n += _batch_len(next(it))
        # psutil's child scan walks /proc (~3 ms of main-process CPU on a busy machine); polling every batch
        # (poll_s=0) also counts workers that exit between batches (pipelines that restart workers per epoch)
        if now - polled >= poll_s:
            cpu.update()
            polled = now
    cpu.update()
    wall = time.perf_counter() - t_first
    cpu_s = cpu.seconds()
    main_share = cpu.main_seconds() / cpu_s if cpu_s > 0 else float("nan")
    worker_cpu_s = cpu_s - cpu.main_seconds()
    del it
    return {
        "first_batch_s": first,
        "images": n,
        "wall_s": wall,
        "cpu_s": cpu_s,
        "main_process_cpu_share": main_share,
        "images_per_s": n / wall,
        "images_per_cpu_s": n / cpu_s if cpu_s > 0 else float("nan"),
        # CPU of the worker processes alone (0 for thread-based pipelines such as DALI's)
        "worker_cpu_ms_per_image": 1e3 * worker_cpu_s / n if n else float("nan"),
    }


class _RssPoller(threading.Thread):
    """Peak RSS and PSS of this process and of each child process, and peak PSS of the tree, every 50 ms."""

    def __init__(self, me: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.me = me
        self.main_peak = self.main_pss_peak = self.tree_pss_peak = 0.0
        self.peaks: dict[int, float] = {}
        self.pss_peaks: dict[int, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            info = self.me.memory_full_info()
            self.main_peak = max(self.main_peak, info.rss / 2**20)
            self.main_pss_peak = max(self.main_pss_peak, info.pss / 2**20)
            tree = info.pss / 2**20
            for c in self.me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    ci = c.memory_full_info()
                    self.peaks[c.pid] = max(self.peaks.get(c.pid, 0.0), ci.rss / 2**20)
                    self.pss_peaks[c.pid] = max(self.pss_peaks.get(c.pid, 0.0), ci.pss / 2**20)
                    tree += ci.pss / 2**20
            self.tree_pss_peak = max(self.tree_pss_peak, tree)
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def rss_over_epochs(
    data: dict[str, Any], recipe: str, workers: int, batch_size: int, epochs: int
) -> dict[str, Any]:
    """Peak RSS of the main process and of each worker in each epoch (the same persistent workers serve every
    epoch, so growth would show)."""
    from pass_wds import make_loader
    from pass_wds.augment import load_recipe

    per_epoch = max(1, 6 * workers)  # batches per epoch: a few seconds
    loader = make_loader(
        data["index"],
        batch_size=batch_size,
        recipe=load_recipe(recipe),
        num_workers=workers,
        epoch_samples=per_epoch * batch_size,
    )
    me = psutil.Process()
    out = []
    for epoch in range(epochs):
        poller = _RssPoller(me)
        poller.start()
        loader.set_epoch(epoch)
        for _ in loader:
            pass
        poller.stop()
        main_peak, peaks = poller.main_peak, poller.peaks
        worker_peaks = sorted(peaks.values())
        out.append(
            {
                "epoch": epoch,
                "main_peak_mb": main_peak,
                "worker_peak_mb": max(worker_peaks, default=0.0),
                "tree_peak_pss_mb": poller.tree_pss_peak,
                "main_peak_pss_mb": poller.main_pss_peak,
                "worker_peak_pss_mb": max(poller.pss_peaks.values(), default=0.0),
            }
        )
        print(
            f"  epoch {epoch}: RSS main {main_peak:.0f} MB, max worker {out[-1]['worker_peak_mb']:.0f} MB; "
            f"PSS tree {poller.tree_pss_peak:.0f} MB",
            flush=True,
        )
    return {
        "recipe": recipe,
        "workers": workers,
        "batches_per_epoch": per_epoch,
        "epochs": out,
        "worker_growth_mb": out[-1]["worker_peak_mb"] - out[0]["worker_peak_mb"],
        "main_growth_mb": out[-1]["main_peak_mb"] - out[0]["main_peak_mb"],
        "tree_pss_growth_mb": out[-1]["tree_peak_pss_mb"] - out[0]["tree_peak_pss_mb"],
        "shuffle_buffer_bytes": 64_000_000,
        "peak_buffer_bytes": loader.stats.peak_buffer_bytes,
    }


def s3_vs_local(
    data: dict[str, Any], workers: int, batch_size: int, seconds: float, repeats: int
) -> dict[str, Any]:
    """The same shards read from a local moto S3 server and from local disk (raw samples and eval)."""
    from pass_wds import make_loader
    from tests.servers import CREDS, MotoServer, make_bucket

    os.environ.update(CREDS)
    server = MotoServer().start()
    try:
        bucket = make_bucket(server, "bench")
        shard_dir = Path(data["index"]).parent
        for p in sorted(shard_dir.iterdir()):
            if p.is_file():
                bucket.client.upload_file(str(p), "bench", f"shards/{p.name}")
        so = server.storage_options()
        sources = {"local": (data["index"], None), "s3": ("s3://bench/shards/index.json", so)}
        runs: dict[str, list[dict[str, float]]] = {}
        for _ in range(repeats):
            for recipe in ("none", "eval"):
                for where, (src, opts) in sources.items():

                    def make(src: str = src, opts: Any = opts, recipe: str = recipe) -> Iterable[Any]:
                        return make_loader(
                            src,
                            batch_size=batch_size,
                            recipe=None if recipe == "none" else recipe,
                            num_workers=workers,
                            storage_options=opts,
                        )

                    r = measure(make, seconds, workers)
                    r["mb_per_s"] = r["images_per_s"] * data["mean_sample_bytes"] / 1e6
                    runs.setdefault(f"{where}/{recipe}", []).append(r)
                    print(
                        f"  {where:5s} {recipe:5s} {r['images_per_s']:8.0f} images/s {r['mb_per_s']:7.1f} MB/s",
                        flush=True,
                    )
    finally:
        server.kill()
    summary = {
        k: {
            m: median([x[m] for x in v])
            for m in ("images_per_s", "mb_per_s", "first_batch_s", "images_per_cpu_s")
        }
        for k, v in runs.items()
    }
    for recipe in ("none", "eval"):
        summary[f"s3/{recipe}"]["ratio_vs_local"] = (
            summary[f"s3/{recipe}"]["images_per_s"] / summary[f"local/{recipe}"]["images_per_s"]
        )
    return {"workers": workers, "results": summary, "runs": runs}


# ------------------------------------------------------------------------------------------------ main


def baseline_available(name: str) -> str | None:
    """None when the baseline can run here, else why not (benchmarks/setup_baselines.sh installs them)."""
    mods = {"dali": "nvidia.dali", "spdl": "spdl.io", "litdata": "litdata", "floor": "simplejpeg"}
    if name not in mods:
        return None
    try:
        __import__(mods[name])
    except Exception as e:  # a missing package or, for spdl, missing FFmpeg 5.1 libraries
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160]} (bash benchmarks/setup_baselines.sh)"
    return None


def _tree_pss(root: psutil.Process) -> dict[int, float]:
    """PSS in MB of ``root`` and each of its descendants (shared pages split between their users)."""
    out = {}
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            out[p.pid] = p.memory_full_info().pss / 2**20
    return out


def run_isolated(case: str, args: argparse.Namespace, poll_s: float = 0.25) -> dict[str, Any]:
    """Run one case in a fresh interpreter that imports only its own pipeline (as a training script would),
    and poll the PSS of that process tree from here, outside the measured CPU time: peak of the tree (summed
    at one instant), of its main process and of its largest worker."""
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-case", case, "--images", str(args.images)]
    cmd += ["--batch-size", str(args.batch_size), "--seconds", str(args.seconds)]
    cmd += ["--poll-seconds", str(args.poll_seconds)] + (["--photos"] if args.photos else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    tree = main_peak = worker_peak = 0.0
    procs = 0
    while proc.poll() is None:
        pss = _tree_pss(root)
        if pss:
            tree = max(tree, sum(pss.values()))
            main_peak = max(main_peak, pss.get(proc.pid, 0.0))
            others = [v for k, v in pss.items() if k != proc.pid]
            worker_peak = max([worker_peak, *others])
            procs = max(procs, len(pss))
        time.sleep(poll_s)
    out, _ = proc.communicate()
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"case {case} failed (exit {proc.returncode}):\n{out[-2000:]}")
    r: dict[str, Any] = json.loads(line[len("RESULT ") :])
    r.update(peak_pss_mb=tree, main_peak_pss_mb=main_peak, worker_peak_pss_mb=worker_peak, processes=procs)
    return r


def run_case(case: str, args: argparse.Namespace) -> None:
    """``--run-case PIPE/RECIPE/wN``: measure one case in this process and print its result as JSON."""
    pipe, recipe, w = case.split("/")
    workers = int(w[1:])
    data = prepare(args.images, args.photos, (pipe,))
    r = measure(
        lambda: PIPELINES[pipe](data, recipe, workers, args.batch_size),
        args.seconds,
        workers,
        args.poll_seconds,
    )
    print("RESULT " + json.dumps(r), flush=True)


def _ratios(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """Median over rounds of the per-core rate of ``a`` over that of ``b`` in the same round."""
    return median([x["images_per_cpu_s"] / y["images_per_cpu_s"] for x, y in zip(a, b, strict=False)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=FULL_IMAGES)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_IMAGES} images, 2 repeats, 3 s per case")
    ap.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 1, os.cpu_count() or 1],
        help="DataLoader workers of our cases; 0 = in-process (the reference of the 'x in-process' column)",
    )
    ap.add_argument("--baseline-workers", type=int, default=None, help="default: the largest --workers")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--recipes",
        default=",".join(OURS_RECIPES),
        help=f"comma-separated, of {', '.join(OURS_RECIPES + EXTRA_RECIPES)}",
    )
    ap.add_argument("--baselines", default=",".join(BASELINES))
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the memory check (0: skip)")
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument(
        "--photos",
        action="store_true",
        help="use images derived from the corpus photos (bench-data/photos-N); writes loader_photos.json",
    )
    ap.add_argument("--name", default=None, help="result file name (default: loader or loader_photos)")
    ap.add_argument(
        "--poll-seconds",
        type=float,
        default=0.0,
        help="CPU-time polling interval (0: every batch; >0 only for pipelines whose workers live through the run)",
    )
    ap.add_argument(
        "--in-process-rounds", type=int, default=0, help="also: decode per core without worker processes"
    )
    ap.add_argument(
        "--no-isolate",
        action="store_true",
        help="run every case in this process (no PSS figures; the main process then holds every pipeline's imports)",
    )
    ap.add_argument("--run-case", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.images = QUICK_IMAGES
        args.repeats = min(args.repeats, 2)
        args.seconds = min(args.seconds, 3.0)
    logging.getLogger("pass_wds.loading").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    if args.run_case:
        run_case(args.run_case, args)
        return
    workers = sorted(set(args.workers))
    bw = args.baseline_workers or max(max(workers), 1)
    recipes = [r for r in args.recipes.split(",") if r]
    skipped = {b: why for b in args.baselines.split(",") if b and (why := baseline_available(b))}
    for b, why in skipped.items():
        print(f"skipping baseline {b}: {why}")
    baselines = [b for b in args.baselines.split(",") if b and b not in skipped]

    data = prepare(args.images, args.photos, tuple(baselines))
    m = machine()
    print(f"machine: {machine_line(m)}")
    print(
        f"data: {data['samples']} samples in {len(data['urls'])} shards, mean {data['mean_sample_bytes'] / 1e3:.1f} kB/sample"
    )

    cases: list[tuple[str, str, int]] = [("pass-wds", r, w) for r in recipes for w in workers]
    cases += [
        (b, r, 1 if b == "floor" else bw)
        for b in baselines
        for r in BASELINE_RECIPES
        if r in {BASELINE_OF[x] for x in recipes} and r in BASELINE_SUPPORTS.get(b, BASELINE_RECIPES)
    ]
    runs: dict[str, list[dict[str, float]]] = {}
    if args.no_isolate:
        print("warm-up (imports, page cache) ...", flush=True)
        for pipe in dict.fromkeys(c[0] for c in cases):
            measure(lambda pipe=pipe: PIPELINES[pipe](data, "eval", bw, args.batch_size), 0.5, bw)
    load = [os.getloadavg()[0]]
    for rep in range(args.repeats):
        print(f"round {rep + 1}/{args.repeats} (load average {os.getloadavg()[0]:.1f})", flush=True)
        for pipe, recipe, w in cases:
            name = f"{pipe}/{recipe}/w{w}"
            if args.no_isolate:
                r = measure(
                    lambda pipe=pipe, recipe=recipe, w=w: PIPELINES[pipe](data, recipe, w, args.batch_size),
                    args.seconds,
                    w,
                    args.poll_seconds,
                )
            else:
                r = run_isolated(name, args)
            runs.setdefault(name, []).append(r)
            pss = f"  PSS {r['peak_pss_mb']:6.0f} MB" if "peak_pss_mb" in r else ""
            print(
                f"  {name:32s} {r['images_per_s']:8.1f} images/s  {r['images_per_cpu_s']:8.1f} /cpu-s  first batch {r['first_batch_s']:5.2f} s{pss}",
                flush=True,
            )
        load.append(os.getloadavg()[0])

    rows = []
    for pipe, recipe, w in cases:
        name = f"{pipe}/{recipe}/w{w}"
        rs = runs[name]
        row: dict[str, Any] = {"case": name, "pipeline": pipe, "recipe": recipe, "workers": w}
        for k in (
            "images_per_s",
            "images_per_cpu_s",
            "first_batch_s",
            "main_process_cpu_share",
            "worker_cpu_ms_per_image",
            "peak_pss_mb",
            "main_peak_pss_mb",
            "worker_peak_pss_mb",
        ):
            if k in rs[0]:
                row[k] = median([x[k] for x in rs])
        if "peak_pss_mb" in rs[0]:
            row["max_peak_pss_mb"] = max(x["peak_pss_mb"] for x in rs)
        row["images_per_s_per_worker"] = row["images_per_s"] / max(w, 1)
        row["mb_per_s"] = row["images_per_s"] * data["mean_sample_bytes"] / 1e6
        if pipe == "pass-wds":
            for b in baselines:
                key = f"{b}/{BASELINE_OF[recipe]}/w{1 if b == 'floor' else bw}"
                if key in runs:  # per-round ratios of CPU rates, then their median
                    row[f"x_{b}"] = _ratios(rs, runs[key])
            inproc = f"pass-wds/{recipe}/w0"
            if w > 0 and inproc in runs:  # the worker-process tax: same recipe in-process, same round
                row["x_in_process"] = _ratios(rs, runs[inproc])
            # decode modes against the accurate path of the same recipe, workers and round
            same = {"decode-fast": "decode", "simclr-fast": "simclr", "simclr-cpu-fast": "simclr-cpu"}
            ref = f"pass-wds/{same.get(recipe, '')}/w{w}"
            if recipe in same and ref in runs:
                row["x_accurate"] = _ratios(rs, runs[ref])
        row["runs"] = rs
        rows.append(row)

    cols = [
        ("case", "case", ""),
        ("images_per_s", "images/s", ".1f"),
        ("images_per_cpu_s", "per core (CPU-s)", ".1f"),
        ("first_batch_s", "first batch s", ".2f"),
        ("worker_cpu_ms_per_image", "worker CPU ms/image", ".3f"),
        ("peak_pss_mb", "peak PSS MB (tree)", ".0f"),
        ("main_peak_pss_mb", "main PSS MB", ".0f"),
        ("worker_peak_pss_mb", "max worker PSS MB", ".0f"),
        ("x_in_process", "× in-process", ".3f"),
    ] + [(f"x_{b}", f"× {b}", ".2f") for b in baselines]
    cols.append(("x_accurate", "× accurate", ".2f"))
    print()
    print(table(rows, cols))

    record: dict[str, Any] = {
        "machine": m,
        "load_average": {"start": load[0], "after_each_round": load[1:]},
        "images": data["samples"],
        "shards": len(data["urls"]),
        "mean_sample_bytes": data["mean_sample_bytes"],
        "batch_size": args.batch_size,
        "seconds_per_case": args.seconds,
        "repeats": args.repeats,
        "torch_threads": 1,
        "isolated": not args.no_isolate,
        "skipped_baselines": skipped,
        "command": " ".join(sys.argv),
        "results": rows,
    }
    if args.epochs:
        w = max(max(workers), 1)
        print(f"\nmemory over {args.epochs} epochs (pass-wds simclr, {w} workers):")
        record["rss"] = rss_over_epochs(data, "simclr", w, args.batch_size, args.epochs)
    if args.in_process_rounds:
        print("\nplain decode without worker processes (ours num_workers=0 vs DALI 1 thread):")
        record["in_process_decode"] = in_process_decode(data, args.in_process_rounds)
    if not args.no_s3:
        w = max(max(workers), 1)
        print(f"\nS3 (moto on loopback) vs local disk, {w} workers:")
        record["s3"] = s3_vs_local(data, w, args.batch_size, args.seconds, args.repeats)
    record["data"] = "photos" if args.photos else "synthetic"
    write_result(args.name or ("loader_photos" if args.photos else "loader"), record)


if __name__ == "__main__":
    main()
