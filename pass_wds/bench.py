"""``pass-wds bench``: how fast the loader feeds training from a given source, and where the time goes.

Two measurements on the same shards:

* **throughput**: the real loader (``make_loader`` with the recipe, ``--workers`` DataLoader processes and,
  with ``--device``, the batched colour stage) for ``--batches`` batches in steady state (after the first
  batch and the batches the workers prefetched meanwhile); prints images/s, MB/s (image + JSON bytes read)
  and the time to the first batch;
* **per-stage time**: one process, one thread, over the first ``--profile-samples`` samples of the source:
  read (tar bytes via the ``.idx``), full decode, the recipe's worker side (decode + geometry), collate and
  the device stage, each in ms per image and images/s per core. The slowest stage per core, times the cores
  you give it, bounds the throughput.

``--recipe decode`` decodes to a full-size RGB tensor and nothing else (the CPU floor of any JPEG pipeline);
``--recipe none`` reads undecoded samples (the I/O floor). ``--device cuda`` without a CUDA device prints
``skipped: no CUDA device`` and exits 0.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pass_wds import storage

__all__ = ["BenchConfig", "BenchResult", "decode_only", "run_bench"]

SPECIAL_RECIPES = ("none", "decode")
PREFETCH_FACTOR = 2


def decode_only(data: bytes, ext: str, rng: np.random.Generator) -> dict[str, Any]:
    """A recipe that only decodes (full size, upright RGB); returns the shape so batches of mixed sizes collate."""
    from pass_wds.decoding import decode_tensor

    x = decode_tensor(data)
    return {"shape": tuple(x.shape)}


@dataclass
class BenchConfig:
    """Options of ``pass-wds bench`` (one per flag)."""

    source: str | list[str]
    recipe: str = "simclr"
    workers: int = 2
    batch_size: int = 64
    batches: int = 20
    device: str | None = None
    colour: str | None = None  # override the recipe's colour placement: "cpu" or "device"
    decode: str | None = None  # override the recipe's decode: "accurate", "fast" or "device"
    profile_samples: int = 128
    seed: int = 0
    storage_options: dict[str, Any] = field(default_factory=dict)
    allow_external_urls: bool = False
    allow_raw_archives: bool = False
    retry_seconds: float = storage.RETRY_SECONDS
    read_timeout: float = storage.READ_TIMEOUT


@dataclass
class BenchResult:
    """What ``run_bench`` measured; ``lines()`` is what the command prints."""

    config: dict[str, Any]
    images: int
    seconds: float
    images_per_s: float
    mb_per_s: float
    first_batch_s: float
    mean_sample_bytes: float
    stages: dict[str, dict[str, float]]
    profiled: int = 0
    skipped: str | None = None

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"skipped: {self.skipped}"]
        c = self.config
        out = [
            f"source {c['source']}  recipe {c['recipe']}  workers {c['workers']}  batch {c['batch_size']}  "
            f"device {c['device'] or '-'}",
            f"throughput: {self.images_per_s:.1f} images/s, {self.mb_per_s:.1f} MB/s "
            f"({self.images} images in {self.seconds:.2f} s, after the first batch and the prefetched ones; "
            f"{self.images_per_s / max(1, c['workers']):.1f} images/s per worker)",
            f"time to first batch: {self.first_batch_s:.2f} s",
            f"per-stage time (1 process, 1 thread, {self.profiled} samples):",
            f"  {'stage':<26s} {'ms/image':>9s} {'images/s/core':>14s}",
        ]
        for name, s in self.stages.items():
            out.append(f"  {name:<26s} {s['ms_per_image']:9.3f} {s['images_per_s']:14.1f}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _public_config(cfg: BenchConfig) -> dict[str, Any]:
    """The configuration as printed and written to ``--json``: source redacted, storage options left out."""
    from pass_wds import storage

    config = dataclasses.asdict(cfg)
    config.pop("storage_options", None)
    src = cfg.source
    config["source"] = (
        storage.redact(src, cfg.storage_options)
        if isinstance(src, str)
        else [storage.redact(s, cfg.storage_options) for s in src]
    )
    return config


def _resolve_recipe(name: str, colour: str | None, decode: str | None = None) -> Any:
    from pass_wds.augment import CallableRecipe, load_recipe
    from pass_wds.config import ConfigError

    if name in SPECIAL_RECIPES and decode is not None:
        raise ConfigError(f"--decode applies to augmentation recipes, not to --recipe {name}")
    if name == "none":
        return None
    if name == "decode":
        return CallableRecipe(decode_only)
    return load_recipe(name, colour=colour, decode=decode)


def _sync(device: Any) -> None:
    import torch

    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _stage(seconds: float, images: int) -> dict[str, float]:
    images = max(images, 1)
    return {"ms_per_image": 1e3 * seconds / images, "images_per_s": images / seconds if seconds > 0 else 0.0}


def profile_stages(cfg: BenchConfig, recipe: Any) -> tuple[dict[str, dict[str, float]], float, int]:
    """Per-stage ms per image in this process (one thread), the mean sample size in bytes, and the number of
    samples profiled."""
    import torch

    from pass_wds.decoding import decode_tensor
    from pass_wds.format.samples import parse_sample_json
    from pass_wds.loading import IndexCache, resolve_source
    from pass_wds.loading.pipeline import collate, image_member
    from pass_wds.loading.plan import shard_offsets

    so = cfg.storage_options or None
    retry = storage.RetryPolicy.of(cfg.retry_seconds, cfg.read_timeout)
    shards = resolve_source(
        cfg.source,
        so,
        allow_external_urls=cfg.allow_external_urls,
        allow_raw_archives=cfg.allow_raw_archives,
        retry=retry,
    )
    counts = tuple(s.nsamples for s in shards)
    offsets = shard_offsets(counts)
    cache = IndexCache(shards, so, retry=retry)
    n = min(cfg.profile_samples, sum(counts))
    gids = list(range(n))
    mean_bytes = float(np.mean(cache.sizes(offsets, np.asarray(gids, dtype=np.int64))))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from pass_wds.loading import read_samples

        t0 = time.perf_counter()
        samples = [s for _, s in read_samples(gids, offsets, cache, so)]
        stages = {"read (tar via .idx)": _stage(time.perf_counter() - t0, n)}
        pairs = [(s, m) for s in samples if (m := image_member(s)) is not None]
        if not pairs:
            return stages, mean_bytes, n
        t0 = time.perf_counter()
        decodable = []
        for s, (ext, data) in pairs:
            try:
                decode_tensor(data)
            except Exception:  # a corrupt sample is substituted by the loader; the profile leaves it out
                continue
            decodable.append((s, (ext, data)))
        stages["decode (full, RGB)"] = _stage(time.perf_counter() - t0, len(pairs))
        if not decodable:
            return stages, mean_bytes, n
        images = [m for _, m in decodable]
        good = [s for s, _ in decodable]
        if recipe is None:
            return stages, mean_bytes, n
        rng = np.random.default_rng(cfg.seed)
        per_sample = getattr(recipe, "worker_sample", recipe)  # what the workers call (decode: device too)
        t0 = time.perf_counter()
        outs = []
        for ext, data in images:
            out = per_sample(data, ext, rng)
            out["json"] = {}
            outs.append(out)
        stages["worker side (recipe)"] = _stage(time.perf_counter() - t0, len(images))
        for s in good:
            parse_sample_json(s.get("json"))
        bs = min(cfg.batch_size, len(outs))
        finish = getattr(recipe, "finish_batch", lambda b: b)
        t0 = time.perf_counter()
        batches = [
            finish(collate(outs[i : i + bs], good[i : i + bs])) for i in range(0, len(outs) - bs + 1, bs)
        ]
        stages["collate"] = _stage(time.perf_counter() - t0, bs * len(batches))
        if cfg.device and hasattr(recipe, "device_stage") and "shape" not in outs[0]:
            recipe.device_stage(batches[0], cfg.device, generator=0)  # warm-up (CUDA context, kernels)
            _sync(cfg.device)
            t0 = time.perf_counter()
            for i, b in enumerate(batches):
                recipe.device_stage(b, cfg.device, generator=i)
            _sync(cfg.device)
            stages[f"device stage ({cfg.device})"] = _stage(time.perf_counter() - t0, bs * len(batches))
    finally:
        torch.set_num_threads(threads)
    return stages, mean_bytes, n


def run_bench(cfg: BenchConfig) -> BenchResult:
    """Measure throughput with the real loader, then the per-stage profile."""
    import torch

    from pass_wds.loading import make_loader

    if cfg.device and torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        return BenchResult(_public_config(cfg), 0, 0.0, 0.0, 0.0, 0.0, 0.0, {}, skipped="no CUDA device")
    recipe = _resolve_recipe(cfg.recipe, cfg.colour, cfg.decode)
    loader = make_loader(
        cfg.source,
        batch_size=cfg.batch_size,
        recipe=recipe,
        num_workers=cfg.workers,
        seed=cfg.seed,
        device=cfg.device if recipe is not None else None,
        storage_options=cfg.storage_options or None,
        allow_external_urls=cfg.allow_external_urls,
        allow_raw_archives=cfg.allow_raw_archives,
        retry_seconds=cfg.retry_seconds,
        read_timeout=cfg.read_timeout,
        pin_memory=cfg.device is not None and torch.device(cfg.device).type == "cuda",
        prefetch_factor=PREFETCH_FACTOR,
    )
    # The workers fill their prefetch queues (workers x prefetch_factor batches) while the first batch is
    # being made; those batches arrive at once, so timing starts after them (steady state).
    skip = 1 + cfg.workers * PREFETCH_FACTOR
    t_start = time.perf_counter()
    first_batch_s = 0.0
    seen = 0
    t_first = t_start
    while seen < skip + cfg.batches:
        for _ in loader:
            seen += 1
            if seen == 1:
                _sync(cfg.device)
                first_batch_s = time.perf_counter() - t_start
            if seen == skip:
                _sync(cfg.device)
                t_first = time.perf_counter()
            if seen >= skip + cfg.batches:
                break
    _sync(cfg.device)
    seconds = time.perf_counter() - t_first
    images = cfg.batches * cfg.batch_size
    stages, mean_bytes, profiled = profile_stages(cfg, recipe)
    ips = images / seconds if seconds > 0 else 0.0
    return BenchResult(
        config=_public_config(cfg),
        images=images,
        seconds=seconds,
        images_per_s=ips,
        mb_per_s=ips * mean_bytes / 1e6,
        first_batch_s=first_batch_s,
        mean_sample_bytes=mean_bytes,
        stages=stages,
        profiled=profiled,
    )
