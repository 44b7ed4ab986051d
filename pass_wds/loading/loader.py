"""``make_loader``: the exact, even, deterministic, resumable DDP loader built from the stages."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch.utils.data import DataLoader

from pass_wds.augment import RecipeLike, load_recipe
from pass_wds.config import (
    READ_TIMEOUT,
    RETRY_SECONDS,
    ConfigError,
    check_options,
    from_dict,
    load_yaml,
    option,
    option_table,
    parse_size,
)
from pass_wds.dataset import check_counts_fit_data
from pass_wds.format.errors import ShardError
from pass_wds.format.manifest import ShardInfo
from pass_wds.format.revisions import revision_of
from pass_wds.format.samples import IMAGE_EXTS
from pass_wds.lifeline import ParentWatch
from pass_wds.loading import carry
from pass_wds.loading.handoff import BatchArenas, init_worker, to_wire
from pass_wds.loading.pipeline import (
    STATE_SLOTS,
    EpochJob,
    LiveBatches,
    PlannedBatches,
    SampleError,
    write_epoch_state,
)
from pass_wds.loading.plan import (
    EpochPlanner,
    Generation,
    GenerationPlan,
    HistoryError,
    PlanParams,
    epoch_sequence,
    shard_offsets,
)
from pass_wds.loading.quality import ShuffleReport, plan_report
from pass_wds.loading.shards import resolve_dataset
from pass_wds.loading.state import STATE_VERSION, LoaderState, StateError, parse_state
from pass_wds.loading.stream import IndexCache, json_field
from pass_wds.storage.cache import ShardCache
from pass_wds.storage.errors import StorageError
from pass_wds.storage.log import get_logger
from pass_wds.storage.retry import RetryPolicy
from pass_wds.storage.urls import without_query

log = get_logger("pass_wds.loading")


DECODE_STATS = "__decode_stats__"  # pass_wds.augment.recipes.DECODE_STATS: device-stage decode failures
MAX_EPOCH_SAMPLES = 100_000_000
# arenas per worker beyond prefetch_factor: the batch being returned and the one the training loop still
# holds while it asks for the next (more live batches make a worker fall back to a fresh segment)
ARENA_SPARE = 2  # a resampled epoch is planned in memory by every reader


@dataclass
class LoaderConfig:
    """Options of the loader; field names are the YAML keys of ``configs/loader.yaml`` and the keywords of
    :func:`make_loader`. Each is declared once here (:func:`pass_wds.config.option`): type and value checks
    and the option table of ``make_loader``'s docstring derive from the declaration; ``output=True`` marks
    the options that change the sample order (the state's fingerprint)."""

    source: str | list[str] | None = option(
        None, "an output folder or prefix, its index.json, a glob, a brace pattern, or a list of those"
    )
    batch_size: int = option(64, "samples per batch, per rank", output=True, minimum=1)
    recipe: str | None = option(
        None, "eval | simclr | mocov2 | byol | dino | swav | a recipe YAML; None: undecoded batches"
    )
    decode: str | None = option(
        None,
        "override the recipe's decode: accurate, fast or device (decoded in the device stage; needs device)",
        choices=("accurate", "fast", "device"),
    )
    num_workers: int = option(4, "DataLoader workers per rank (0: read in the main process)", minimum=0)
    seed: int = option(0, "seed of every epoch's order and of the augmentations", output=True)
    shuffle: bool = option(True, "shuffle (False: shards and samples in order)", output=True)
    remainder: str = option(
        "drop",
        "drop: leave out the samples that do not fill world_size x batch_size (rotating per epoch); pad: repeat",
        output=True,
        choices=("drop", "pad"),
    )
    shuffle_buffer_bytes: str | int = option(
        "64MB", "per worker, raw (undecoded) sample bytes held for shuffling", output=True, size=True
    )
    segment_samples: int = option(
        256, "shards are cut into segments of this many samples, permuted per epoch", output=True, minimum=1
    )
    epoch_samples: int | None = option(
        None, "resampled mode: this many samples per epoch, drawn with replacement", output=True, minimum=1
    )
    on_error: str = option(
        "substitute",
        "a bad sample: substitute (a good one of the same batch) or raise",
        choices=("substitute", "raise"),
    )
    verify_samples: bool = option(
        True,
        "check each image against the crc32 make-shards recorded in its JSON (a mismatch is a bad sample)",
    )
    storage_options: dict[str, Any] = option(factory=dict, help="fsspec storage options (never logged)")
    allow_external_urls: bool = option(
        False, "trust an index.json that names shards outside its own folder (see docs/security.md)"
    )
    allow_raw_archives: bool = option(
        False, "read shards that look like raw image archives (lone images in folders, no sample JSON)"
    )
    across_revisions: bool = option(
        False, "resume a state saved on an earlier revision of the dataset (docs/revisions.md)"
    )
    cache_dir: str | None = option(None, "node-local shard cache: remote shards are downloaded once per node")
    cache_bytes: str | int = option("100GB", "size cap of that cache (LRU)", size=True)
    cache_full: str = option(
        "error",
        "a shard the cache's disk cannot hold even after evicting its own entries: error (one line), or stream "
        "it directly from storage",
        choices=("error", "stream"),
    )
    retry_seconds: float = option(
        RETRY_SECONDS,
        "transient storage failures (refused, reset, timeouts, 5xx, 429, SlowDown) are retried this many "
        "seconds without progress before the error; 0: never",
        minimum=0,
    )
    read_timeout: float = option(
        READ_TIMEOUT, "a storage request with no answer or byte for this many seconds is a failed try"
    )
    prefetch_factor: int = option(2, "batches each worker prepares ahead (the DataLoader's)", minimum=1)
    reuse_buffers: bool = option(
        True, "workers hand batches over in reused shared-memory arenas (docs/loader.md)"
    )
    pin_memory: bool = option(False, "pin batches in page-locked memory (the DataLoader's)")
    persistent_workers: bool = option(
        True, "keep the worker processes (and the shard indexes they read) from epoch to epoch"
    )
    device: str | None = option(None, "run the recipe's batched device stage there (cpu, cuda, cuda:1 …)")
    rank: int | None = option(None, "this process's rank (default: torch.distributed, else RANK, else 0)")
    world_size: int | None = option(
        None, "number of ranks (default: torch.distributed, else WORLD_SIZE, else 1)"
    )

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> LoaderConfig:
        data = load_yaml(path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        cfg = from_dict(cls, data, source=str(path))
        cfg.validate_values()
        return cfg

    def validate_values(self) -> None:
        """The declared types and values (one line naming the option), then what no single declaration says."""
        check_options(self, flags=False)
        if not self.source:
            raise ConfigError("loader needs a source (index.json, brace pattern or list of shard URLs)")
        if self.epoch_samples is not None and self.epoch_samples > MAX_EPOCH_SAMPLES:
            raise ConfigError(
                f"epoch_samples={self.epoch_samples:,} is too large: every reader plans its epoch as an index "
                f"(8 bytes a sample); use virtual epochs of at most {MAX_EPOCH_SAMPLES:,} samples and set_epoch()"
            )
        if self.decode == "device" and not self.device:
            raise ConfigError(
                "decode='device' decodes in the device stage, so it needs device= (e.g. 'cuda', or 'cpu' to run "
                "the same code on the CPU)"
            )
        if self.read_timeout <= 0:
            raise ConfigError(f"read_timeout must be > 0 seconds, got {self.read_timeout}")

    def build(self, recipe: str | RecipeLike | Callable[..., Any] | None = None) -> Loader:
        """A :class:`Loader`; ``recipe`` (a callable) overrides the configured recipe name."""
        self.validate_values()
        return Loader(self, recipe if recipe is not None else self.recipe)


def distributed_topology(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Rank and world size: explicit values, else ``torch.distributed``, else torchrun's env, else 0/1."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        r, ws = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        r, ws = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    r = r if rank is None else rank
    ws = ws if world_size is None else world_size
    if ws < 1 or not 0 <= r < ws:
        raise ConfigError(f"invalid rank {r} for world size {ws}")
    return r, ws


@dataclass
class LoaderStats:
    """Counters over everything this loader delivered (summed over its workers)."""

    batches: int = 0
    samples: int = 0
    errors: int = 0
    substituted: list[tuple[str, str]] = field(default_factory=list)
    bad: list[dict[str, Any]] = field(default_factory=list)
    peak_buffer_bytes: int = 0

    def update(self, s: dict[str, Any], batch_size: int) -> None:
        self.batches += 1
        self.samples += batch_size
        self.add_errors(s)

    def add_errors(self, s: dict[str, Any]) -> None:
        """Count bad samples (worker statistics, or the device stage's ``decode: device`` failures)."""
        self.errors += int(s.get("errors", 0))
        self.substituted.extend(tuple(x) for x in s.get("substituted", []))  # type: ignore[misc]
        self.bad.extend(s.get("bad", []))
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, int(s.get("peak_buffer_bytes", 0)))


class Loader:
    """Iterable over this rank's batches of the current epoch. See ``docs/loader.md``.

    ``len(loader)`` is the number of batches the next ``iter()`` yields: a full epoch, or its rest after a
    resume or an interrupted iteration. A completed epoch advances to the next one automatically, and
    ``set_epoch(e)`` selects an epoch explicitly (a no-op for the current one, so a resumed position stays).
    """

    def __init__(
        self, config: LoaderConfig, recipe: str | RecipeLike | Callable[..., Any] | None = None
    ) -> None:
        self.config = config
        self.rank, self.world_size = distributed_topology(config.rank, config.world_size)
        self.retry = RetryPolicy.of(config.retry_seconds, config.read_timeout)
        dataset = resolve_dataset(
            config.source,  # type: ignore[arg-type]
            config.storage_options or None,
            allow_external_urls=config.allow_external_urls,
            allow_raw_archives=config.allow_raw_archives,
            retry=self.retry,
        )
        self.shards: list[ShardInfo] = dataset.shards
        self._manifest = dataset.manifest or {}
        self.revision = revision_of(self._manifest)
        """The dataset revision (``index.json``'s ``revision``; 0 without one): ``make-shards update`` makes the
        next one, and a state saved on another is refused unless ``across_revisions``."""
        # manifest counts are claims: they must fit the shards' bytes before they size any plan
        check_counts_fit_data(self.shards, config.storage_options or None, retry=self.retry)
        if recipe is None and config.decode is not None:
            raise ConfigError(
                f"decode={config.decode!r} needs a recipe (recipe=None gives undecoded batches)"
            )
        self.recipe: RecipeLike | None = None if recipe is None else load_recipe(recipe, decode=config.decode)
        self.decode_on_device = bool(getattr(self.recipe, "decode_on_device", False))
        if self.decode_on_device and not config.device:
            raise ConfigError(
                f"recipe {getattr(self.recipe, 'name', recipe)!r} has decode: device, which needs device= "
                "(e.g. 'cuda', or 'cpu' to run the same code on the CPU)"
            )
        self.params = PlanParams(
            counts=tuple(s.nsamples for s in self.shards),
            seed=config.seed,
            batch_size=config.batch_size,
            remainder=config.remainder,
            shuffle=config.shuffle,
            segment_samples=config.segment_samples,
            shuffle_buffer_bytes=parse_size(config.shuffle_buffer_bytes),
            epoch_samples=config.epoch_samples,
        )
        self.readers = max(1, config.num_workers)
        self.epoch = 0
        self._history: list[Generation] = []
        # an epoch carried over from earlier revisions (across_revisions): their parts, and the sequence of
        # what they left, on this revision's shards
        self._carried: tuple[tuple[int, tuple[Generation, ...]], ...] = ()
        self._start: np.ndarray | None = None
        self._workers_start: np.ndarray | None = None  # the start the persistent workers were given
        self.stats = LoaderStats()
        self._cache = IndexCache(self.shards, config.storage_options or None, retry=self.retry)
        self._shard_cache = (  # one per loader: what it says once stays said
            ShardCache(
                config.cache_dir, parse_size(config.cache_bytes), retry=self.retry, on_full=config.cache_full
            )
            if config.cache_dir
            else None
        )
        self._plans: tuple[Any, list[GenerationPlan]] | None = None
        self._workers: DataLoader | None = None  # the persistent DataLoader, made on the first iteration
        self._epoch_state: torch.Tensor | None = None
        # shared-memory arenas the workers stack batches into, reused while the main process frees them
        self._arenas = (
            BatchArenas(config.num_workers, config.prefetch_factor + ARENA_SPARE)
            if config.reuse_buffers and config.num_workers > 0
            else None
        )
        self.dropped_keys: list[str] = []
        if self.recipe is not None:
            self._check_images()
        # With remainder "drop", an epoch shorter than one global batch would silently have zero batches.
        per_epoch = config.epoch_samples if config.epoch_samples is not None else sum(self.params.counts)
        if config.remainder == "drop" and per_epoch < self.world_size * config.batch_size:
            what = f"{per_epoch} samples" if config.epoch_samples is None else f"epoch_samples ({per_epoch})"
            raise ConfigError(
                f"{what} cannot fill one batch of {config.batch_size} on each of {self.world_size} ranks "
                "(use remainder='pad', a smaller batch size or a larger epoch)"
            )

    def _check_images(self) -> None:
        """Fail early, naming the shard, when a shard that a recipe must decode holds no image members."""
        checked = [i for i, s in enumerate(self.shards) if s.index is not None and s.nsamples]
        first_indexed = next((i for i, s in enumerate(self.shards) if s.index is None and s.nsamples), None)
        if first_indexed is not None:
            checked.append(first_indexed)
        for i in checked:
            index = self._cache.get(i)
            exts = {m.ext for ms in index.members for m in ms}
            if not any(e.rsplit(".", 1)[-1].lower() in IMAGE_EXTS for e in exts):
                raise ShardError(
                    f"{self.shards[i].url}: no image members (extensions: {', '.join(sorted(exts)) or 'none'}); "
                    "pass recipe=None to get undecoded samples"
                )

    # ----- epoch bookkeeping -------------------------------------------------------------------------

    def _current_history(self) -> tuple[Generation, ...]:
        hist = list(self._history)
        if not hist or (hist[-1].world_size, hist[-1].num_workers) != (self.world_size, self.readers):
            hist.append(Generation(self.world_size, self.readers, 0))
        return tuple(hist)

    def _generation_plans(self, history: tuple[Generation, ...]) -> list[GenerationPlan]:
        key = (self.epoch, history[:-1], history[-1].world_size, history[-1].num_workers)
        if self._plans is None or self._plans[0] != key:
            self._plans = (key, self._plan(self.epoch, history))
        return self._plans[1]

    def _sizes(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """Sample sizes by global id (what the shuffle buffer holds), read from the ``.idx`` files as needed."""
        offsets = shard_offsets(self.params.counts)
        return (lambda g: self._cache.sizes(offsets, g)) if self.params.shuffle else None

    def _plan(self, epoch: int, history: tuple[Generation, ...]) -> list[GenerationPlan]:
        sizes = self._sizes()
        start = self._start if epoch == self.epoch else None
        return EpochPlanner(self.params, sizes).generations(epoch, history, start)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self.epoch = epoch
            self._new_epoch()

    def _new_epoch(self) -> None:
        self._history = []
        self._carried, self._start = (), None

    def __len__(self) -> int:
        hist = self._current_history()
        return self._generation_plans(hist)[-1].batches_per_rank - hist[-1].batches

    @property
    def batches_per_epoch(self) -> int:
        """Batches per rank in a full epoch with the current topology."""
        plans = EpochPlanner(self.params).generations(
            self.epoch, (Generation(self.world_size, self.readers),)
        )
        return plans[0].batches_per_rank

    def dropped(self) -> list[str]:
        """Keys left out of the current generation by ``remainder="drop"`` (fewer than world_size × batch_size)."""
        plan = self._generation_plans(self._current_history())[-1]
        offsets = shard_offsets(self.params.counts)
        return [self._cache.key(offsets, int(g)) for g in plan.sequence[plan.dropped]]

    # ----- iteration ---------------------------------------------------------------------------------

    def _job(self, history: tuple[Generation, ...]) -> EpochJob:
        return EpochJob(
            shards=self.shards,
            params=self.params,
            epoch=self.epoch,
            history=history,
            rank=self.rank,
            recipe=self.recipe,
            on_error=self.config.on_error,
            verify_samples=self.config.verify_samples,
            storage_options=self.config.storage_options or None,
            retry=self.retry,
            shard_cache=self._shard_cache,
            arenas=self._arenas,
            start=self._start,
            start_epoch=self.epoch if self._start is not None else -1,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        history = self._current_history()
        plan = self._generation_plans(history)[-1]
        expected = plan.batches_per_rank - history[-1].batches
        if history[-1].batches == 0:
            self.dropped_keys = self.dropped() if len(plan.dropped) else []
        if (
            history[-1].batches == 0 and len(plan.dropped) and self.rank == 0
        ):  # the same on every rank: say it once
            log.info(
                "epoch %d: dropping %d samples (remainder of %d over world_size x batch_size = %d): %s",
                self.epoch,
                len(plan.dropped),
                len(plan.base) + len(plan.dropped),
                self.world_size * self.params.batch_size,
                " ".join(self.dropped_keys[:50]) + (" …" if len(self.dropped_keys) > 50 else ""),
            )
        self._history = list(history)
        if self.config.num_workers == 0:
            batches: Any = iter(PlannedBatches(self._job(history)))
        elif self.config.persistent_workers:
            batches = self._persistent(history)
        else:
            batches = self._dataloader(PlannedBatches(self._job(history)), persistent=False)
        delivered = received = 0
        device = torch.device(self.config.device) if self.config.device else None
        staged = device is not None and self.recipe is not None and hasattr(self.recipe, "device_stage")
        # decode: device on CUDA: batch k+1 is decoded on a side stream while the caller trains on batch k.
        on_cuda = device is not None and device.type == "cuda"
        side = torch.cuda.Stream(device) if staged and self.decode_on_device and on_cuda else None
        pending: tuple[dict[str, Any], dict[str, Any], Any] | None = None
        for batch in _one_line_errors(batches):
            stats = batch.pop("__stats__", {})
            received += 1
            event = None
            if staged:
                # 1-based index of this batch in its generation (it may be one ahead of the delivered ones)
                index = self._history[-1].batches + received - delivered
                if side is not None:
                    with torch.cuda.stream(side):
                        batch = self._device_stage(batch, device, len(self._history) - 1, index)  # type: ignore[arg-type]
                        event = side.record_event()
                else:
                    batch = self._device_stage(batch, device, len(self._history) - 1, index)  # type: ignore[arg-type]
            if side is None:
                delivered += 1
                yield self._deliver(batch, stats, None)
                continue
            if pending is not None:
                delivered += 1
                yield self._deliver(*pending)
            pending = (batch, stats, event)
        if pending is not None:
            delivered += 1
            yield self._deliver(*pending)
        if delivered != expected:
            raise RuntimeError(f"rank {self.rank} got {delivered} batches, planned {expected} (loader bug)")
        self.epoch += 1
        self._new_epoch()

    def _deliver(self, batch: dict[str, Any], stats: dict[str, Any], event: Any) -> dict[str, Any]:
        """Count a batch as delivered (statistics and the resumable position) just before it is yielded; a
        batch staged on a side CUDA stream is first made safe to use on the caller's stream."""
        self.stats.update(stats, self.params.batch_size)
        failed = batch.pop(DECODE_STATS, None)
        if failed and self.config.on_error == "raise":
            bad = failed["bad"][0]
            raise SampleError(f"sample {bad['key']!r} of {bad['url']}: {bad['reason']}: {bad['detail']}")
        if failed:
            self.stats.add_errors(failed)
            for bad in failed.get("bad", []):
                log.warning(
                    "bad sample %r in %s (%s: %s); substituting",
                    bad["key"],
                    bad["url"],
                    bad["reason"],
                    bad["detail"],
                )
        if event is not None:
            current = torch.cuda.current_stream(torch.device(self.config.device))  # type: ignore[arg-type]
            current.wait_event(event)
            for value in batch.values():
                for t in value if isinstance(value, list) else [value]:
                    if isinstance(t, torch.Tensor) and t.is_cuda:
                        t.record_stream(current)
        gen = self._history[-1]
        self._history[-1] = dataclasses.replace(gen, batches=gen.batches + 1)
        return batch

    def _dataloader(self, dataset: Any, *, persistent: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.config.num_workers,
            prefetch_factor=self.config.prefetch_factor,
            pin_memory=self.config.pin_memory,
            persistent_workers=persistent,
            collate_fn=to_wire,
            worker_init_fn=WorkerInit(),
        )

    def _persistent(self, history: tuple[Generation, ...]) -> DataLoader:
        """One DataLoader for the whole run: its workers read each epoch's plan from shared memory, so a new
        epoch (or a resumed position) starts without new processes or re-reading shard indexes."""
        if self._workers is not None and self._workers_start is not self._start:
            self._workers = (
                None  # they plan a carried epoch (or no longer one): new workers with this one's job
            )
        if self._workers is None:
            self._workers_start = self._start
            self._epoch_state = torch.zeros(STATE_SLOTS, dtype=torch.int64).share_memory_()
            self._workers = self._dataloader(
                LiveBatches(self._job(history), self._epoch_state), persistent=True
            )
        assert self._epoch_state is not None
        write_epoch_state(self._epoch_state, self.epoch, history)  # read by the workers on this iter()
        return self._workers

    def _device_stage(
        self, batch: dict[str, Any], device: torch.device, gen: int, index: int
    ) -> dict[str, Any]:
        """Batched colour + normalisation on ``device``, seeded per (seed, epoch, generation, rank, batch) so a
        resumed run draws the same colour parameters."""
        stage = self.recipe.device_stage  # type: ignore[union-attr]
        if "generator" in inspect.signature(stage).parameters:
            rng = np.random.default_rng([self.params.seed, self.epoch, gen, self.rank, index, 0xDE7])
            return stage(batch, device, generator=rng)  # type: ignore[no-any-return]
        return stage(batch, device)  # type: ignore[no-any-return]

    # ----- shuffle quality -----------------------------------------------------------------------------

    def shuffle_report(
        self,
        *,
        epoch: int | None = None,
        world_size: int | None = None,
        num_workers: int | None = None,
        group_by: str | None = None,
    ) -> ShuffleReport:
        """How well epoch ``epoch`` (default: the current one) and the next mix, against a uniform shuffle
        (:mod:`pass_wds.loading.quality`), for this loader's topology or another one. Reads only the shards'
        ``.idx`` files (for sample sizes), no image bytes; ``group_by="json:FIELD"`` also reads each sample's
        JSON member to group by that field."""
        ws = self.world_size if world_size is None else world_size
        readers = self.readers if num_workers is None else max(1, num_workers)
        if ws < 1:
            raise ConfigError(f"world_size must be >= 1, got {ws}")
        labels = []
        if group_by is not None:
            labels.append(self._labels(group_by))
        sizes, footprint = self._cache.footprints()
        planner = EpochPlanner(self.params, (lambda g: sizes[g]) if self.params.shuffle else None)
        p = self.params
        settings = {
            "seed": p.seed,
            "segment_samples": p.segment_samples,
            "shuffle_buffer_bytes": p.shuffle_buffer_bytes,
            "remainder": p.remainder,
        }
        if not p.shuffle:
            settings["shuffle"] = False
        if p.epoch_samples is not None:
            settings["epoch_samples"] = p.epoch_samples
        return plan_report(
            planner,
            ws,
            readers,
            epoch=self.epoch if epoch is None else epoch,
            footprint=footprint,
            settings=settings,
            groups=labels,
        )

    def _labels(self, group_by: str) -> tuple[str, np.ndarray, list[str]]:
        """``(name, label code per global sample id, label names)`` for ``group_by``."""
        kind, _, name = group_by.partition(":")
        if kind != "json" or not name:
            raise ConfigError(f"group_by must be 'json:FIELD', got {group_by!r}")
        values = json_field(self.shards, name, self.config.storage_options or None, retry=self.retry)
        names = sorted(set(values), key=str)
        code = {v: i for i, v in enumerate(names)}
        return f"json:{name}", np.array([code[v] for v in values], dtype=np.int64), [str(v) for v in names]

    # ----- checkpointing -----------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """Identifies the data (shard names, counts and content: the manifest's sha256, else the layout read
        from the ``.idx`` or a header scan, else the size) and every setting that changes the sample order."""
        return fingerprint_of(
            [
                [without_query(s.url).rsplit("/", 1)[-1], s.nsamples, s.sha256 or s.layout or s.filesize]
                for s in self.shards
            ],
            self.params,
        )

    def _carry(
        self, parsed: LoaderState
    ) -> tuple[tuple[tuple[int, tuple[Generation, ...]], ...], np.ndarray | None, tuple[Generation, ...]]:
        """``(carried parts, start sequence, generations)`` of a checked state on this dataset's revision.

        A state of this revision resumes as it is. One saved on an earlier revision ``r`` is refused unless
        ``across_revisions``: then revision ``r``'s epoch is replayed on its own layout (rebuilt from the
        manifest's history, checked against the state's fingerprint), and the samples it had not delivered,
        minus the removed ones, become the sequence of a new generation here (:mod:`pass_wds.loading.carry`)."""
        if parsed.revision == self.revision and not parsed.carried:
            if parsed.fingerprint != self.fingerprint():
                raise StateError(
                    f"loader state field 'fingerprint' ({parsed.fingerprint}) belongs to different shards or "
                    f"settings than this loader ({self.fingerprint()}): shard names, counts or content, seed, "
                    "batch_size, remainder, shuffle, segment_samples, shuffle_buffer_bytes or epoch_samples"
                )
            return (), None, parsed.generations
        if parsed.revision != self.revision and not self.config.across_revisions:
            raise StateError(
                f"loader state field 'revision' is {parsed.revision}: it was saved on revision {parsed.revision} "
                f"of this dataset, which is now revision {self.revision} (make-shards update changed it); pass "
                "across_revisions=True to finish that epoch with the samples this revision still has"
            )
        if parsed.revision > self.revision:
            raise StateError(
                f"loader state field 'revision' is {parsed.revision}, newer than this dataset (revision "
                f"{self.revision}): it belongs to a later revision of it"
            )
        if parsed.carried and parsed.carried[-1][0] >= parsed.revision:
            raise StateError(
                f"loader state field 'carried' holds revision {parsed.carried[-1][0]}, not older than the "
                f"state's revision {parsed.revision}"
            )
        parts = (
            parsed.carried
            if parsed.revision == self.revision
            else (
                *parsed.carried,
                (parsed.revision, parsed.generations),
            )
        )
        try:
            chain = carry.steps(self._manifest, parts[0][0])
        except (carry.LineageError, KeyError, TypeError, ValueError) as e:
            raise StateError(
                f"loader state field 'revision' is {parsed.revision}, but this dataset's history cannot rebuild "
                f"it: {str(e).splitlines()[0]}"
            ) from None
        saved_on = next((s.old for s in chain if s.old.revision == parsed.revision), chain[-1].new)
        expected = fingerprint_of(
            [
                [e["url"].rsplit("/", 1)[-1], e["nsamples"], e.get("sha256") or e.get("filesize")]
                for e in saved_on.shards
            ],
            dataclasses.replace(self.params, counts=saved_on.counts),
        )
        if parsed.fingerprint != expected:
            raise StateError(
                f"loader state field 'fingerprint' ({parsed.fingerprint}) does not match revision "
                f"{parsed.revision} of this dataset ({expected}): other shards or settings (seed, batch_size, "
                "remainder, shuffle, segment_samples, shuffle_buffer_bytes or epoch_samples)"
            )
        current = self._sizes()
        sizes = carry.layout_sizes(chain, current) if current is not None else [None] * (len(chain) + 1)
        done = dict(parts)
        start: np.ndarray | None = None
        for k, step in enumerate(chain):
            gens = done.get(step.old.revision)
            if gens:
                planner = EpochPlanner(dataclasses.replace(self.params, counts=step.old.counts), sizes[k])
                try:
                    start = planner.unseen(parsed.epoch, gens, start)
                except HistoryError as e:
                    raise StateError(
                        f"loader state: revision {step.old.revision}'s generation {e.index} delivered "
                        f"{e.batches} batches, but it has only {e.batches_per_rank} per rank"
                    ) from None
            if start is None:  # nothing was delivered before this revision: the epoch had not begun
                start = epoch_sequence(dataclasses.replace(self.params, counts=step.old.counts), parsed.epoch)
            mapped = step.to_new[start]
            start = mapped[mapped >= 0]
        history = parsed.generations if parsed.revision == self.revision else ()
        return parts, start, history

    def state_dict(self) -> dict[str, Any]:
        """Small and identical on every rank: epoch, delivered batches per generation, fingerprint (the schema:
        :mod:`pass_wds.loading.state`)."""
        return LoaderState(
            version=STATE_VERSION,
            epoch=self.epoch,
            seed=self.params.seed,
            batch_size=self.params.batch_size,
            fingerprint=self.fingerprint(),
            generations=tuple(self._history),
            revision=self.revision,
            carried=self._carried,
        ).to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``. Every field is checked first (:func:`~pass_wds.loading.state.parse_state`)
        and the whole history is planned before anything is changed, so a refused state (a
        :class:`~pass_wds.loading.state.StateError`, one line naming the field) leaves the loader as it was."""
        parsed = parse_state(state)
        carried, start, history = self._carry(parsed)
        for name, mine in (("seed", self.params.seed), ("batch_size", self.params.batch_size)):
            if getattr(parsed, name) != mine:
                raise StateError(
                    f"loader state field '{name}' is {getattr(parsed, name)}, this loader's is {mine}"
                )
        plans: list[GenerationPlan] | None = None
        if history:
            try:
                plans = EpochPlanner(self.params, self._sizes()).generations(parsed.epoch, history, start)
            except HistoryError as e:
                raise StateError(
                    f"loader state field 'generations[{e.index}][2]' is {e.batches}, but that part of the epoch "
                    f"has only {e.batches_per_rank} batches per rank"
                ) from None
            if history[-1].batches > plans[-1].batches_per_rank:
                raise StateError(
                    f"loader state field 'generations[{len(history) - 1}][2]' is {history[-1].batches}, more "
                    f"batches than its epoch has ({plans[-1].batches_per_rank} per rank)"
                )
        self.epoch = parsed.epoch
        self._history = list(history)
        self._carried, self._start = carried, start
        self._plans = None
        if plans is not None:
            key = (self.epoch, history[:-1], history[-1].world_size, history[-1].num_workers)
            self._plans = (key, plans)


def fingerprint_of(shards: Sequence[Sequence[Any]], params: PlanParams) -> str:
    """A loader state's fingerprint: ``[name, count, content]`` per shard (content: the sha256, else the
    layout or the size) and the settings that change the sample order."""
    p = params
    desc = {
        "shards": [list(s) for s in shards],
        "params": [
            p.seed,
            p.batch_size,
            p.remainder,
            p.shuffle,
            p.segment_samples,
            p.shuffle_buffer_bytes,
            p.epoch_samples,
        ],
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


class WorkerInit:
    """The DataLoader's ``worker_init_fn``: each worker ends with this rank, however the rank ends
    (:mod:`pass_wds.lifeline`), then tunes its allocator (:func:`~pass_wds.loading.handoff.init_worker`)."""

    def __init__(self) -> None:
        self.lifeline = ParentWatch()  # made here, in the rank: it carries the rank's pid to the workers

    def __call__(self, worker_id: int) -> None:
        self.lifeline()
        init_worker(worker_id)


def _one_line_errors(batches: Any) -> Iterator[dict[str, Any]]:
    """Batches, with a storage or shard error raised in a DataLoader worker re-raised as the one line it was
    there: torch re-raises it with "Caught … in DataLoader worker process N. Original Traceback …" as its
    message, and a user's mistake (a 403, a missing shard) must not read as a crash."""
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (StorageError, ShardError) as e:
            text = str(e)
            if not (text.startswith("Caught ") and "Original Traceback" in text):
                raise
            last = [line for line in text.splitlines() if line.strip()][-1]
            try:
                unwrapped = type(e)(last.partition(": ")[2] or last)
            except Exception:
                raise e from None
            raise unwrapped from None
        yield batch


def make_loader(
    source: str | Sequence[str],
    *,
    batch_size: int,
    recipe: str | RecipeLike | Callable[..., Any] | None = None,
    decode: str | None = None,
    num_workers: int = 4,
    seed: int = 0,
    shuffle: bool = True,
    remainder: str = "drop",
    shuffle_buffer_bytes: str | int = "64MB",
    segment_samples: int = 256,
    epoch_samples: int | None = None,
    on_error: str = "substitute",
    verify_samples: bool = True,
    storage_options: dict[str, Any] | None = None,
    allow_external_urls: bool = False,
    allow_raw_archives: bool = False,
    across_revisions: bool = False,
    cache_dir: str | None = None,
    cache_bytes: str | int = "100GB",
    cache_full: str = "error",
    retry_seconds: float = RETRY_SECONDS,
    read_timeout: float = READ_TIMEOUT,
    prefetch_factor: int = 2,
    reuse_buffers: bool = True,
    pin_memory: bool = False,
    persistent_workers: bool = True,
    device: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    **unknown: NoReturn,
) -> Loader:
    """Build the loader for ``source``: an output folder or prefix, its ``index.json``, a glob, a brace
    pattern, or a list (see :mod:`pass_wds.dataset`).

    ``recipe``: a recipe name/YAML path (``pass_wds.augment``), any callable
    ``(image_bytes, ext, rng) -> {"image": …} | {"views": […]}``, or None for undecoded batches. Every other
    keyword is the :class:`LoaderConfig` option of that name (the same as its YAML key), checked there: a
    wrong type or value is one :class:`~pass_wds.config.ConfigError` line naming it, and so is an unknown
    keyword (which static type checkers also flag). The options:

    """
    options = {k: v for k, v in locals().items() if k not in ("source", "recipe", "unknown")}
    if unknown:
        raise ConfigError(f"unknown option(s) in make_loader(): {', '.join(sorted(unknown))}")
    if options["storage_options"] is None:
        options["storage_options"] = {}
    cfg = LoaderConfig(
        source=source if isinstance(source, str) else list(source),
        recipe=recipe if isinstance(recipe, str) else None,
        **options,
    )
    return cfg.build(recipe if callable(recipe) else None)


if make_loader.__doc__ is not None:  # None under python -OO
    make_loader.__doc__ += textwrap.indent(option_table(LoaderConfig), "    ") + "\n"


__all__ = ["Loader", "LoaderConfig", "LoaderStats", "distributed_topology", "make_loader"]
