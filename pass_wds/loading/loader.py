"""``make_loader``: the exact, even, deterministic, resumable DDP loader built from the stages."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pass_wds.augment import load_recipe
from pass_wds.config import ConfigError, check_seconds, from_dict, load_yaml, parse_size
from pass_wds.dataset import check_counts_fit_data
from pass_wds.format.errors import ShardError
from pass_wds.format.manifest import ShardInfo
from pass_wds.format.samples import IMAGE_EXTS
from pass_wds.lifeline import ParentWatch
from pass_wds.loading.pipeline import (
    STATE_SLOTS,
    EpochJob,
    LiveBatches,
    PlannedBatches,
    Recipe,
    SampleError,
    write_epoch_state,
)
from pass_wds.loading.plan import (
    EpochPlanner,
    Generation,
    GenerationPlan,
    HistoryError,
    PlanParams,
    shard_offsets,
)
from pass_wds.loading.quality import ShuffleReport, plan_report
from pass_wds.loading.shards import resolve_source
from pass_wds.loading.state import STATE_VERSION, LoaderState, StateError, parse_state
from pass_wds.loading.stream import IndexCache, json_field
from pass_wds.storage.cache import ShardCache
from pass_wds.storage.errors import StorageError
from pass_wds.storage.log import get_logger
from pass_wds.storage.retry import READ_TIMEOUT, RETRY_SECONDS, RetryPolicy
from pass_wds.storage.urls import without_query

log = get_logger("pass_wds.loading")


DECODE_STATS = "__decode_stats__"  # pass_wds.augment.recipes.DECODE_STATS: device-stage decode failures
MAX_EPOCH_SAMPLES = 100_000_000  # a resampled epoch is planned in memory by every reader


@dataclass
class LoaderConfig:
    """Options of the loader; field names are the YAML keys of ``configs/loader.yaml``."""

    source: str | list[str] | None = None
    batch_size: int = 64
    recipe: str | None = None
    decode: str | None = None  # override the recipe's decode: "accurate", "fast" or "device"
    num_workers: int = 4
    seed: int = 0
    shuffle: bool = True
    remainder: str = "drop"
    shuffle_buffer_bytes: str | int = "64MB"
    segment_samples: int = 256
    epoch_samples: int | None = None
    on_error: str = "substitute"
    verify_samples: bool = True  # check each image against the crc32 make-shards recorded in its JSON
    storage_options: dict[str, Any] = field(default_factory=dict)
    allow_external_urls: bool = False  # trust an index.json that names shards outside its own folder
    allow_raw_archives: bool = False  # read shards that look like raw image archives (lone images in folders)
    cache_dir: str | None = None
    cache_bytes: str | int = "100GB"
    cache_full: str = "error"  # a shard the cache's disk cannot hold: "error", or "stream" it directly
    retry_seconds: float = RETRY_SECONDS  # transient storage failures are retried this long without progress
    read_timeout: float = READ_TIMEOUT  # no answer or byte from storage for this long is a failed try
    prefetch_factor: int = 2
    pin_memory: bool = False
    persistent_workers: bool = True
    device: str | None = None
    rank: int | None = None
    world_size: int | None = None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> LoaderConfig:
        data = load_yaml(path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        cfg = from_dict(cls, data, source=str(path))
        cfg.validate_values()
        return cfg

    def validate_values(self) -> None:
        if not self.source:
            raise ConfigError("loader needs a source (index.json, brace pattern or list of shard URLs)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.remainder not in ("drop", "pad"):
            raise ConfigError(f"remainder must be 'drop' or 'pad', got {self.remainder!r}")
        if self.on_error not in ("substitute", "raise"):
            raise ConfigError(f"on_error must be 'substitute' or 'raise', got {self.on_error!r}")
        if self.segment_samples < 1:
            raise ConfigError(f"segment_samples must be >= 1, got {self.segment_samples}")
        if self.epoch_samples is not None and self.epoch_samples < 1:
            raise ConfigError(f"epoch_samples must be >= 1, got {self.epoch_samples}")
        if self.epoch_samples is not None and self.epoch_samples > MAX_EPOCH_SAMPLES:
            raise ConfigError(
                f"epoch_samples={self.epoch_samples:,} is too large: every reader plans its epoch as an index "
                f"(8 bytes a sample); use virtual epochs of at most {MAX_EPOCH_SAMPLES:,} samples and set_epoch()"
            )
        if self.decode is not None and self.decode not in ("accurate", "fast", "device"):
            raise ConfigError(f"decode must be 'accurate', 'fast' or 'device', got {self.decode!r}")
        if self.decode == "device" and not self.device:
            raise ConfigError(
                "decode='device' decodes in the device stage, so it needs device= (e.g. 'cuda', or 'cpu' to run "
                "the same code on the CPU)"
            )
        if self.prefetch_factor < 1:
            raise ConfigError(f"prefetch_factor must be >= 1, got {self.prefetch_factor}")
        if self.cache_full not in ("error", "stream"):
            raise ConfigError(f"cache_full must be 'error' or 'stream', got {self.cache_full!r}")
        check_seconds("retry_seconds", self.retry_seconds)
        check_seconds("read_timeout", self.read_timeout, positive=True)
        parse_size(self.shuffle_buffer_bytes)
        parse_size(self.cache_bytes)

    def build(self, recipe: str | Recipe | None = None) -> Loader:
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

    def __init__(self, config: LoaderConfig, recipe: str | Recipe | None = None) -> None:
        self.config = config
        self.rank, self.world_size = distributed_topology(config.rank, config.world_size)
        self.retry = RetryPolicy.of(config.retry_seconds, config.read_timeout)
        self.shards: list[ShardInfo] = resolve_source(
            config.source,  # type: ignore[arg-type]
            config.storage_options or None,
            allow_external_urls=config.allow_external_urls,
            allow_raw_archives=config.allow_raw_archives,
            retry=self.retry,
        )
        # manifest counts are claims: they must fit the shards' bytes before they size any plan
        check_counts_fit_data(self.shards, config.storage_options or None, retry=self.retry)
        if recipe is None and config.decode is not None:
            raise ConfigError(
                f"decode={config.decode!r} needs a recipe (recipe=None gives undecoded batches)"
            )
        self.recipe = None if recipe is None else load_recipe(recipe, decode=config.decode)
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

    def _plan(self, epoch: int, history: tuple[Generation, ...]) -> list[GenerationPlan]:
        offsets = shard_offsets(self.params.counts)
        sizes = (lambda g: self._cache.sizes(offsets, g)) if self.params.shuffle else None
        return EpochPlanner(self.params, sizes).generations(epoch, history)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self.epoch = epoch
            self._history = []

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
        self._history = []

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
            worker_init_fn=ParentWatch(),  # workers end with this rank, however it ends (see lifeline)
        )

    def _persistent(self, history: tuple[Generation, ...]) -> DataLoader:
        """One DataLoader for the whole run: its workers read each epoch's plan from shared memory, so a new
        epoch (or a resumed position) starts without new processes or re-reading shard indexes."""
        if self._workers is None:
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
        p = self.params
        desc = {
            "shards": [
                [without_query(s.url).rsplit("/", 1)[-1], s.nsamples, s.sha256 or s.layout or s.filesize]
                for s in self.shards
            ],
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
        ).to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``. Every field is checked first (:func:`~pass_wds.loading.state.parse_state`)
        and the whole history is planned before anything is changed, so a refused state (a
        :class:`~pass_wds.loading.state.StateError`, one line naming the field) leaves the loader as it was."""
        parsed = parse_state(state)
        if parsed.fingerprint != self.fingerprint():
            raise StateError(
                f"loader state field 'fingerprint' ({parsed.fingerprint}) belongs to different shards or settings "
                f"than this loader ({self.fingerprint()}): shard names, counts or content, seed, batch_size, "
                "remainder, shuffle, segment_samples, shuffle_buffer_bytes or epoch_samples"
            )
        for name, mine in (("seed", self.params.seed), ("batch_size", self.params.batch_size)):
            if getattr(parsed, name) != mine:
                raise StateError(
                    f"loader state field '{name}' is {getattr(parsed, name)}, this loader's is {mine}"
                )
        history = parsed.generations
        plans: list[GenerationPlan] | None = None
        if history:
            try:
                plans = self._plan(parsed.epoch, history)
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
        self._plans = None
        if plans is not None:
            key = (self.epoch, history[:-1], history[-1].world_size, history[-1].num_workers)
            self._plans = (key, plans)


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
    recipe: str | Recipe | None = None,
    **options: Any,
) -> Loader:
    """Build the loader for ``source``: an output folder or prefix, its ``index.json``, a glob, a brace
    pattern, or a list (see :mod:`pass_wds.dataset`).

    ``recipe``: a recipe name/YAML path (``pass_wds.augment``), any callable
    ``(image_bytes, ext, rng) -> {"image": …} | {"views": […]}``, or None for undecoded batches.
    ``decode`` (an option) overrides the recipe's: ``accurate``, ``fast``, or ``device`` (needs ``device``).
    ``options``: any other :class:`LoaderConfig` field (``num_workers``, ``seed``, ``epoch_samples``,
    ``cache_dir``, ``device``, …); their defaults and validation live there, once.
    ``allow_external_urls=True`` trusts an ``index.json`` that lists absolute shard URLs or paths outside its
    own folder (refused by default: a manifest from elsewhere could make the loader read local files);
    ``verify_samples=False`` skips the per-sample crc32 check; ``allow_raw_archives=True`` reads shards that
    look like raw image archives (lone images under folders, no sample JSON: PASS's own tars are refused
    without it, as they are not the dataset).
    """
    if options.get("storage_options") is None:
        options.pop("storage_options", None)
    fields = {
        **options,
        "source": source if isinstance(source, str) else list(source),
        "batch_size": batch_size,
        "recipe": recipe if isinstance(recipe, str) else None,
    }
    cfg = from_dict(LoaderConfig, fields, source="make_loader()")
    return cfg.build(recipe if callable(recipe) else None)


__all__ = ["Loader", "LoaderConfig", "LoaderStats", "distributed_topology", "make_loader"]
