"""Worker-side stages: planned reading → shuffle buffer → decode/augment → whole batches.

Each stage is a plain generator, and :class:`PlannedSamples` / :class:`PlannedBatches` wrap them as
``IterableDataset``\\s, so they compose with a torch ``DataLoader`` or webdataset's ``DataPipeline``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pass_wds.augment.recipes import RecipeLike
from pass_wds.decoding import DecodeError
from pass_wds.errors import PassWdsError
from pass_wds.format import reasons
from pass_wds.format.errors import ShardError
from pass_wds.format.manifest import ShardInfo
from pass_wds.format.samples import IMAGE_EXTS, checksum_problem, parse_sample_json
from pass_wds.loading.handoff import ALIGN, ARENA_KEY, BatchArenas
from pass_wds.loading.plan import (
    EpochPlanner,
    Generation,
    GenerationPlan,
    PlanParams,
    plan_worker_and_batch,
    shard_offsets,
)
from pass_wds.loading.rngs import batch_generators
from pass_wds.loading.stream import IndexCache, Sample, read_samples
from pass_wds.storage.cache import ShardCache
from pass_wds.storage.errors import redact
from pass_wds.storage.log import get_logger
from pass_wds.storage.retry import RetryPolicy

log = get_logger("pass_wds.loading")

SampleFn = Callable[[bytes, str, np.random.Generator], dict[str, Any]]
"""The least a reader needs to decode: a per-sample function; every :class:`RecipeLike` is one."""
_AUG_TAG = 0xA06


_WARNED = "__warned_shards__"  # key of a reader's stats: shards it has warned about (never sent with a batch)


class CorruptSample(ValueError):
    """The image bytes differ from what make-shards stored (its recorded crc32 or size): silent corruption
    on a disk, in a cache or in transit."""

    reason = reasons.CHECKSUM_MISMATCH


class NoImage(ValueError):
    """A sample has no member the loader decodes as an image."""

    reason = reasons.NO_IMAGE


class SampleError(DecodeError):
    """A sample could not be decoded/augmented and ``on_error="raise"`` was chosen (message redacted)."""

    def __init__(self, message: str) -> None:
        PassWdsError.__init__(self, redact(message))
        self.reason, self.detail = reasons.FAILED, str(self)

    def __reduce__(self) -> tuple[Any, ...]:  # DataLoader workers pickle it to the main process
        return (SampleError, (str(self),))


@dataclass
class EpochJob:
    """Everything a reader needs to produce its part of an epoch (picklable, no open handles)."""

    shards: list[ShardInfo]
    params: PlanParams
    epoch: int
    history: tuple[Generation, ...]
    rank: int
    recipe: RecipeLike | SampleFn | None = None
    on_error: str = "substitute"
    verify_samples: bool = True
    storage_options: dict[str, Any] | None = None
    shard_cache: ShardCache | None = None
    retry: RetryPolicy | None = None
    cache: IndexCache | None = field(default=None, repr=False)
    arenas: BatchArenas | None = field(default=None, repr=False)  # reused hand-off buffers (workers only)
    start: np.ndarray | None = field(default=None, repr=False)
    """The sequence of epoch ``start_epoch`` when it was carried over from an earlier dataset revision."""
    start_epoch: int = -1

    def epoch_start(self) -> np.ndarray | None:
        return self.start if self.epoch == self.start_epoch else None

    def index_cache(self) -> IndexCache:
        if self.cache is None:
            self.cache = IndexCache(self.shards, self.storage_options, retry=self.retry)
        return self.cache

    def planner(self) -> EpochPlanner:
        cache = self.index_cache()
        offsets = shard_offsets(self.params.counts)
        sizes = (lambda gids: cache.sizes(offsets, gids)) if self.params.shuffle else None
        return EpochPlanner(self.params, sizes)


@dataclass
class ReaderPlan:
    """What one DataLoader worker emits: ``order`` (indices into ``plan.base``) and reads (``read``)."""

    plan: GenerationPlan
    order: np.ndarray
    read: np.ndarray


def reader_plan(job: EpochJob, worker_id: int) -> ReaderPlan:
    """Pure: the rest of this worker's emission order and the base indices it must read, in read order."""
    planner = job.planner()
    plan = planner.generations(job.epoch, job.history, job.epoch_start())[-1]
    gen = job.history[-1]
    plan_worker, start_local = plan_worker_and_batch(worker_id, gen.batches, gen.num_workers)
    order = planner.worker_order(plan, job.rank, plan_worker)[start_local * job.params.batch_size :]
    return ReaderPlan(plan, order, np.sort(order))


def stream_planned(
    job: EpochJob, worker_id: int, stats: dict[str, Any] | None = None
) -> Iterator[tuple[int, Sample]]:
    """Raw samples of this worker in emission order, as ``(base index, sample)``.

    Samples are read in epoch-sequence order and held only until their turn, which never exceeds what the simulated
    byte-bounded shuffle buffer holds (see ``plan.shuffle_order``).
    """
    rp = reader_plan(job, worker_id)
    if len(rp.order) == 0:
        return
    offsets = shard_offsets(job.params.counts)
    gids = rp.plan.sequence[rp.plan.base[rp.read]]
    pending: dict[int, Sample] = {}
    held = 0
    peak = 0
    order = rp.order.tolist()
    t = 0
    for q, (_, sample) in zip(
        rp.read.tolist(),
        read_samples(gids, offsets, job.index_cache(), job.storage_options, job.shard_cache),
        strict=True,
    ):
        sample["__index__"] = q
        if q == order[t]:
            t += 1
            yield q, sample
        else:
            pending[q] = sample
            held += _nbytes(sample)
            peak = max(peak, held)
            if stats is not None:
                stats["peak_buffer_bytes"] = peak
        while t < len(order) and order[t] in pending:
            s = pending.pop(order[t])
            held -= _nbytes(s)
            t += 1
            yield order[t - 1], s
    if t != len(order):
        raise ShardError(f"reader ended after {t} of {len(order)} planned samples")


def _nbytes(sample: Sample) -> int:
    return sum(len(v) for k, v in sample.items() if not k.startswith("__") and isinstance(v, bytes))


def image_member(sample: Sample) -> tuple[str, bytes] | None:
    """The first member whose (last) extension is an image format, as ``(ext, bytes)``."""
    for k, v in sample.items():
        if not k.startswith("__") and isinstance(v, bytes):
            ext = k.rsplit(".", 1)[-1].lower()
            if ext in IMAGE_EXTS:
                return ext, v
    return None


def check_sample(image: bytes, meta: dict[str, Any]) -> None:
    """Raise :class:`CorruptSample` when the image is not the one make-shards stored for this JSON."""
    problem = checksum_problem(image, meta)
    if problem is not None:
        raise CorruptSample(problem)


def apply_recipe(
    recipe: RecipeLike | SampleFn, sample: Sample, rng: np.random.Generator, verify: bool = False
) -> dict[str, Any]:
    """Decode + worker-side augmentation of one sample; raises on any problem (caller applies the policy).
    With ``verify``, the image is first checked against the checksum in its JSON."""
    found = image_member(sample)
    if found is None:
        members = ", ".join(k for k in sample if not k.startswith("__")) or "none"
        raise NoImage(f"no image member (members: {members})")
    meta = parse_sample_json(sample.get("json"))
    if verify:
        check_sample(found[1], meta)
    per_sample = getattr(recipe, "worker_sample", recipe)  # a Recipe may defer work to finish_batch
    out = per_sample(found[1], found[0], rng)
    out["json"] = meta
    return out


def _rng(job: EpochJob, plan_index: int, q: int, substitute: int) -> np.random.Generator:
    return np.random.default_rng([job.params.seed, job.epoch, plan_index, q, substitute, _AUG_TAG])


def _rngs(job: EpochJob, plan_index: int, qs: list[int], substitute: int) -> list[np.random.Generator]:
    """``[_rng(job, plan_index, q, substitute) for q in qs]``, the same streams, seeded together."""
    return batch_generators([job.params.seed, job.epoch, plan_index], qs, [substitute, _AUG_TAG])


def collate(
    outs: list[dict[str, Any]], samples: list[Sample], arenas: BatchArenas | None = None
) -> dict[str, Any]:
    """Stack recipe outputs into a batch dict (``image`` B×3×H×W or ``views`` list of those).

    In a DataLoader worker the stacked tensors go straight into shared memory: one reused arena of
    ``arenas`` for the whole batch when one is free (:mod:`pass_wds.loading.handoff`), else a new segment
    per tensor (torch's default hand-off would otherwise copy the batch once more on its way out)."""
    batch: dict[str, Any] = {
        "__key__": [s["__key__"] for s in samples],
        "__url__": [s["__url__"] for s in samples],
    }
    stacks: list[tuple[str, int | None, list[torch.Tensor]]] = []
    for name in outs[0]:
        values = [o[name] for o in outs]
        if name == "views":
            batch["views"] = [None] * len(values[0])
            stacks += [("views", i, [v[i] for v in values]) for i in range(len(values[0]))]
        elif isinstance(values[0], torch.Tensor):
            batch[name] = None
            stacks.append((name, None, values))
        else:
            batch[name] = values
    if not stacks:
        return batch
    layouts = [_layout(ts, name if i is None else f"{name}[{i}]") for name, i, ts in stacks]
    arena = None
    if arenas is not None and (writer := arenas.writer()) is not None:
        arena = writer.acquire(sum(-(-lay[2] // ALIGN) * ALIGN for lay in layouts))
        if arena is not None:
            batch[ARENA_KEY] = arena
    for (name, i, tensors), (shape, hwc, nbytes) in zip(stacks, layouts, strict=True):
        if arena is not None:
            out = arena.empty(shape, tensors[0].dtype)
        elif get_worker_info() is not None:
            storage = tensors[0].untyped_storage()._new_shared(nbytes)
            out = tensors[0].new(storage).view(shape)
        else:
            out = tensors[0].new_empty(shape)
        if hwc:
            torch.stack([t.permute(1, 2, 0) for t in tensors], out=out)
            out = out.permute(0, 3, 1, 2)
        else:
            torch.stack(tensors, out=out)
        if i is None:
            batch[name] = out
        else:
            batch[name][i] = out
    return batch


def _layout(tensors: list[torch.Tensor], name: str) -> tuple[tuple[int, ...], bool, int]:
    """Shape, layout and bytes of the stacked batch of same-shape tensors. Image views (3xHxW laid out HWC,
    as the resize makes them) are stacked into a channels-last batch, which is a plain copy per image instead
    of a transposing copy (~15x faster for uint8). The batch has the usual shape Bx3xHxW; ``.contiguous()``
    gives NCHW memory."""
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"recipe output {name!r} has different shapes in one batch: {sorted(shapes)}")
    first = tensors[0]
    hwc = first.dim() == 3 and all(t.permute(1, 2, 0).is_contiguous() for t in tensors)
    shape = (len(tensors), *first.shape[1:], first.shape[0]) if hwc else (len(tensors), *first.shape)
    return shape, hwc, len(tensors) * first.numel() * first.element_size()


def collate_raw(
    samples: list[Sample], stats: dict[str, Any] | None = None, job: EpochJob | None = None
) -> dict[str, Any]:
    """Undecoded batch: keys, urls, parsed json, and one list of bytes (or None) per member extension.

    A ``.json`` member that does not parse becomes ``{}`` (its bytes stay under ``"json_raw"``) and is counted.
    With ``job.verify_samples``, an image that fails its checksum raises (``on_error="raise"``) or is counted
    and warned (there is no decode to substitute for); it stays in the batch.
    """
    batch: dict[str, Any] = {
        "__key__": [s["__key__"] for s in samples],
        "__url__": [s["__url__"] for s in samples],
    }
    exts = sorted({k for s in samples for k in s if not k.startswith("__") and k != "json"})
    for ext in exts:
        batch[ext] = [s.get(ext) for s in samples]
    metas = []
    for s in samples:
        try:
            metas.append(parse_sample_json(s.get("json")))
        except ValueError as e:
            metas.append({})
            batch.setdefault("json_raw", [x.get("json") for x in samples])
            if stats is not None:
                _count(stats, s, reasons.BAD_JSON, str(e), action="kept with json {}")
            continue
        found = image_member(s) if job is not None and job.verify_samples else None
        if found is not None:
            try:
                check_sample(found[1], metas[-1])
            except CorruptSample as e:
                if job is not None and job.on_error == "raise":
                    raise SampleError(f"sample {s['__key__']!r} of {s['__url__']}: {e}") from None
                if stats is not None:
                    _count_corrupt(stats, s, e, action="kept (undecoded batches are not substituted)")
    batch["json"] = metas
    return batch


def batch_stream(
    job: EpochJob, items: Iterable[tuple[int, Sample]], plan_index: int, stats: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Decode and batch ``items`` into whole batches; bad samples follow ``job.on_error``.

    ``substitute``: a failed sample is replaced by re-augmenting the nearest good sample of the same batch
    (later first, then earlier) with the failed sample's own random stream; if a whole batch fails it borrows
    the first good sample of the worker's next batch. Both rules look only at the batch and what follows it,
    so a resumed run substitutes exactly as the uninterrupted one did.
    """
    bs = job.params.batch_size
    waiting: list[tuple[list[Sample], list[dict[str, Any] | None], list[int]]] = []
    chunk: list[tuple[int, Sample]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) < bs:
            continue
        samples = [s for _, s in chunk]
        if job.recipe is None:
            yield _with_stats(collate_raw(samples, stats, job), stats)
            chunk = []
            continue
        outs: list[dict[str, Any] | None] = []
        for (_, s), rng in zip(chunk, _rngs(job, plan_index, [q for q, _ in chunk], 0), strict=True):
            try:
                outs.append(apply_recipe(job.recipe, s, rng, job.verify_samples))
            except Exception as e:  # any failure of decode/augment is a bad sample
                if job.on_error == "raise":
                    raise SampleError(
                        f"sample {s['__key__']!r} of {s['__url__']}: {type(e).__name__}: {e}"
                    ) from e
                outs.append(None)
                if isinstance(e, CorruptSample):
                    _count_corrupt(stats, s, e)
                else:
                    _count_failure(stats, s, e)
        qs = [q for q, _ in chunk]
        chunk = []
        good = [j for j, o in enumerate(outs) if o is not None]
        if not good:
            waiting.append((samples, outs, qs))
            continue
        donor_sample = samples[good[0]]
        for w_samples, w_outs, w_qs in waiting:
            _substitute(job, plan_index, w_samples, w_outs, w_qs, [], donor_sample, stats)
            yield _with_stats(_finish_batch(job, collate(w_outs, w_samples, job.arenas)), stats)  # type: ignore[arg-type]
        waiting = []
        _substitute(job, plan_index, samples, outs, qs, good, None, stats)
        yield _with_stats(_finish_batch(job, collate(outs, samples, job.arenas)), stats)  # type: ignore[arg-type]
    if chunk:
        raise ShardError(f"reader produced {len(chunk)} samples beyond its last whole batch (plan bug)")
    if waiting:
        keys = [s["__key__"] for w in waiting for s in w[0]]
        raise ShardError(
            f"no decodable sample left in this reader to substitute for {len(keys)} bad samples "
            f"(first keys: {keys[:5]}); are these image shards?"
        )


def _finish_batch(job: EpochJob, batch: dict[str, Any]) -> dict[str, Any]:
    finish = getattr(job.recipe, "finish_batch", None)
    return finish(batch) if finish is not None else batch


def _count(
    stats: dict[str, Any],
    sample: Sample,
    reason: str,
    detail: str,
    action: str = "substituting",
) -> None:
    stats["errors"] = stats.get("errors", 0) + 1
    stats.setdefault("bad", []).append(
        {
            "key": sample["__key__"],
            "url": redact(sample["__url__"]),
            "reason": reason,
            "detail": redact(detail[:200]),
        }
    )
    if reason != reasons.CHECKSUM_MISMATCH:  # warned once per shard by _count_corrupt
        log.warning(
            "bad sample %r in %s (%s: %s); %s",
            sample["__key__"],
            sample["__url__"],
            reason,
            detail[:200],
            action,
        )


def _count_failure(stats: dict[str, Any], sample: Sample, e: BaseException) -> None:
    """Count a sample whose decode or augmentation failed, under its reason (``reasons.reason_of``)."""
    reason = reasons.reason_of(e)
    _count(stats, sample, reason, str(e) if reason != reasons.FAILED else f"{type(e).__name__}: {e}")


def _count_corrupt(
    stats: dict[str, Any], sample: Sample, e: CorruptSample, action: str = "substituting"
) -> None:
    """Count a sample that failed its checksum; warn once per shard and reader (a damaged shard has many).
    The reader's stats remember which shards it warned about: no process-wide state."""
    url = sample["__url__"]
    _count(stats, sample, reasons.CHECKSUM_MISMATCH, str(e), action=action)
    warned: set[str] = stats.setdefault(_WARNED, set())
    if url not in warned:
        warned.add(url)
        log.warning(
            "shard %s has corrupt samples (checksum (crc32) mismatch, first: %r: %s); %s; further corrupt "
            "samples of this shard are counted in loader.stats, not logged",
            url,
            sample["__key__"],
            e,
            action,
        )


def _substitute(
    job: EpochJob,
    plan_index: int,
    samples: list[Sample],
    outs: list[dict[str, Any] | None],
    qs: list[int],
    good: list[int],
    donor: Sample | None,
    stats: dict[str, Any],
) -> None:
    for j, o in enumerate(outs):
        if o is not None:
            continue
        if donor is None:
            later = [g for g in good if g > j]
            d = later[0] if later else good[-1]
            src = samples[d]
        else:
            src = donor
        try:
            out = apply_recipe(job.recipe, src, _rng(job, plan_index, qs[j], 1))  # type: ignore[arg-type]
        except Exception:
            if donor is not None:
                raise
            out = outs[d]  # type: ignore[assignment]
        outs[j] = out
        stats.setdefault("substituted", []).append([samples[j]["__key__"], src["__key__"]])
        samples[j] = {"__key__": src["__key__"], "__url__": src["__url__"]}


def _with_stats(batch: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    batch["__stats__"] = {k: v for k, v in stats.items() if k != _WARNED}
    stats.pop("bad", None)
    stats.pop("substituted", None)
    stats["errors"] = 0
    return batch


def _worker_id(job: EpochJob) -> int:
    """This DataLoader worker's id, checked against the worker count the epoch was planned for."""
    info = get_worker_info()
    planned = job.history[-1].num_workers
    actual = 1 if info is None else info.num_workers
    if actual != planned:
        raise ValueError(
            f"epoch planned for {planned} reader(s) per rank but the DataLoader runs {actual}; "
            "set Generation(world_size, num_workers) to the DataLoader's num_workers (1 for num_workers=0)"
        )
    return 0 if info is None else info.id


class PlannedSamples(IterableDataset):
    """Raw sample dicts (``__key__``, ``__url__``, ext → bytes) of this rank and DataLoader worker, in planned
    order. Batch them in groups of exactly ``batch_size`` to keep epochs exact (e.g. ``wds.batched``)."""

    def __init__(self, job: EpochJob) -> None:
        self.job = job

    def __iter__(self) -> Iterator[Sample]:
        for _, sample in stream_planned(self.job, _worker_id(self.job)):
            yield sample


STATE_SLOTS = 2 + 3 * 256  # epoch, generation count, then (world_size, num_workers, batches) per generation


def write_epoch_state(state: torch.Tensor, epoch: int, history: tuple[Generation, ...]) -> None:
    """Record the epoch a :class:`LiveBatches` reads next (in a shared int64 tensor of ``STATE_SLOTS``)."""
    if 2 + 3 * len(history) > len(state):
        raise ValueError(f"{len(history)} topology changes within one epoch: more than this loader records")
    values = [epoch, len(history)] + [v for g in history for v in (g.world_size, g.num_workers, g.batches)]
    state[: len(values)] = torch.tensor(values, dtype=torch.int64)


def read_epoch_state(state: torch.Tensor) -> tuple[int, tuple[Generation, ...]]:
    values = state.tolist()
    n = int(values[1])
    return int(values[0]), tuple(Generation(*values[2 + 3 * i : 5 + 3 * i]) for i in range(n))


class PlannedBatches(IterableDataset):
    """Whole batches of this rank and DataLoader worker (use ``DataLoader(..., batch_size=None)``)."""

    def __init__(self, job: EpochJob) -> None:
        self.job = job

    def __iter__(self) -> Iterator[dict[str, Any]]:
        wid = _worker_id(self.job)
        stats: dict[str, Any] = {"errors": 0, "worker": wid}
        plan_index = len(self.job.history) - 1
        yield from batch_stream(self.job, stream_planned(self.job, wid, stats), plan_index, stats)


class LiveBatches(IterableDataset):
    """:class:`PlannedBatches` for persistent DataLoader workers: each ``iter()`` reads the epoch and its
    topology history from a small shared-memory tensor (:func:`write_epoch_state`, written by the loader
    before each epoch), so worker processes, and the shard indexes they have read, last the whole run."""

    def __init__(self, job: EpochJob, state: torch.Tensor) -> None:
        self.job = job
        self.state = state

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, history = read_epoch_state(self.state)
        job = dataclasses.replace(self.job, epoch=epoch, history=history, cache=self.job.index_cache())
        yield from PlannedBatches(job)
