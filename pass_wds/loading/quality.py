"""How well an epoch plan mixes, measured against a uniform shuffle of the same samples. Pure: computed from
the plan and the per-sample sizes alone (no image byte is read), with vectorised NumPy, so PASS's 1.44 M
samples take seconds.

Two things matter for self-supervised learning, which learns from in-batch comparisons:

* **distinct shards per batch** (mean and 5th percentile): a batch of ``b`` drawn uniformly from ``N``
  samples in shards of ``n_s`` samples holds ``Σ_s 1 − C(N−n_s, b)/C(N, b)`` distinct shards on average
  (``≈ S·(1−(1−1/S)^b)`` for ``S`` equal shards); a streaming reader that takes whole stretches of a shard
  into one batch holds far fewer. The *same-shard pair lift* is the chance that two batch-mates share a
  shard, divided by that chance under a uniform shuffle (1.0 is uniform).
* **pair recurrence**: the chance that two batch-mates of epoch ``e`` are batch-mates again in ``e+1``
  (among pairs whose samples both appear in ``e+1``); a uniform shuffle gives ``(b−1)/(N−1)``. Times
  ``b−1`` it is the number of last epoch's batch-mates an image meets again: recurring negatives for
  contrastive methods.

Labels other than shards (a JSON field, the source of a mix) are reported the same way (distinct groups per
batch, same-group pair lift, and each group's share of a batch). Every uniform value comes with the standard
deviation of the observed statistic under a uniform shuffle, so "within 3σ of uniform" can be checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pass_wds.loading.plan import EpochPlanner, Generation, GenerationPlan, shard_offsets, worker_batches

GAP_READ_THROUGH = 1 << 20  # the reader's rule (loading.stream): smaller gaps are read through, not seeked
_MAX_LEVELS = 512  # distinct group sizes kept exactly in the variance of the distinct count; more are binned


# ------------------------------------------------------------------------------------------------ the plan


def worker_emissions(
    planner: EpochPlanner, plan: GenerationPlan
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(rank, worker, emitted global ids, read global ids)`` of every reader of one generation."""
    out = []
    for rank in range(plan.world_size):
        for w in range(plan.num_workers):
            order = planner.worker_order(plan, rank, w)
            out.append((rank, w, plan.sequence[plan.base[order]], plan.sequence[plan.base[np.sort(order)]]))
    return out


def epoch_batches(
    planner: EpochPlanner, epoch: int, world_size: int, num_workers: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every batch of a full epoch as a ``(batches, batch_size)`` array of global sample ids (rank-major,
    each rank's batches in delivery order), and each reader's global ids in read order."""
    plan = planner.generations(epoch, (Generation(world_size, num_workers),))[0]
    b = planner.p.batch_size
    br = plan.batches_per_rank
    batches = np.zeros((world_size * br, b), dtype=np.int64)
    reads = []
    for rank, w, emitted, read in worker_emissions(planner, plan):
        local = emitted.reshape(-1, b)
        assert len(local) == worker_batches(br, num_workers, w)
        batches[rank * br + np.arange(len(local)) * num_workers + w] = local
        reads.append(read)
    return batches, reads


# ------------------------------------------------------------------------------------------------- metrics


def distinct_per_batch(labels: np.ndarray) -> np.ndarray:
    """Number of distinct labels in each row of a ``(batches, b)`` label array."""
    if labels.size == 0:
        return np.zeros(len(labels), dtype=np.int64)
    s = np.sort(labels, axis=1)
    return 1 + (np.diff(s, axis=1) != 0).sum(axis=1)


def _log_absent(population: int, b: int, sizes: np.ndarray) -> np.ndarray:
    """log P(no member of a group of ``sizes`` in a batch of ``b`` drawn without replacement)."""
    out = np.full(len(sizes), -np.inf)
    ok = population - sizes >= b
    lg = math.lgamma
    base = -lg(population + 1) + lg(population - b + 1)
    out[ok] = [lg(population - n + 1) - lg(population - n - b + 1) + base for n in sizes[ok].tolist()]
    return out


def uniform_distinct(group_sizes: np.ndarray, b: int) -> tuple[float, float]:
    """Mean and standard deviation of the distinct groups in a batch of ``b`` drawn uniformly without
    replacement from groups of ``group_sizes`` samples (exact hypergeometric; sizes binned beyond 512
    distinct values)."""
    sizes = np.asarray(group_sizes, dtype=np.int64)
    sizes = sizes[sizes > 0]
    n = int(sizes.sum())
    if n == 0 or b <= 0:
        return 0.0, 0.0
    b = min(b, n)
    levels, mult = np.unique(sizes, return_counts=True)
    if len(levels) > _MAX_LEVELS:  # bin by quantiles: the variance is a smooth function of the sizes
        edges = np.unique(np.quantile(sizes, np.linspace(0, 1, _MAX_LEVELS + 1)).round().astype(np.int64))
        which = np.clip(np.searchsorted(edges, sizes, side="right") - 1, 0, len(edges) - 1)
        mult = np.bincount(which, minlength=len(edges))
        sums = np.bincount(which, weights=sizes, minlength=len(edges))
        keep = mult > 0
        levels = np.maximum(1, np.round(sums[keep] / mult[keep]).astype(np.int64))
        mult = mult[keep]
    q = np.exp(_log_absent(n, b, levels))  # P(group absent)
    mean = float((mult * (1 - q)).sum())
    var = float((mult * q * (1 - q)).sum())
    pair = np.exp(_log_absent(n, b, (levels[:, None] + levels[None, :]).ravel())).reshape(len(levels), -1)
    cov = pair - q[:, None] * q[None, :]
    weights = mult[:, None] * mult[None, :] - np.diag(mult)  # ordered pairs of different groups
    var += float((weights * cov).sum())
    return mean, math.sqrt(max(var, 0.0))


def same_label_pairs(labels: np.ndarray) -> tuple[int, int]:
    """``(batch-mate pairs with equal labels, all batch-mate pairs)`` over a ``(batches, b)`` array."""
    rows, b = labels.shape if labels.ndim == 2 else (0, 0)
    if rows == 0 or b < 2:
        return 0, 0
    s = np.sort(labels, axis=1)
    flat = s + (np.arange(rows, dtype=np.int64)[:, None] * (int(s.max()) + 1))
    _, counts = np.unique(flat, return_counts=True)
    return int((counts * (counts - 1) // 2).sum()), rows * b * (b - 1) // 2


def uniform_same_label_rate(group_sizes: np.ndarray) -> float:
    """Chance that two different samples drawn uniformly share a group."""
    sizes = np.asarray(group_sizes, dtype=np.float64)
    n = sizes.sum()
    return float((sizes * (sizes - 1)).sum() / (n * (n - 1))) if n > 1 else 0.0


def recurrence(first: np.ndarray, second: np.ndarray, id_space: int) -> tuple[int, np.ndarray]:
    """Pairs of batch-mates of ``first`` that are batch-mates again in ``second``, and per batch of
    ``first`` how many of its samples appear in ``second`` (only their pairs can meet again); both are
    ``(batches, b)`` arrays of sample ids below ``id_space``."""
    if first.size == 0 or second.size == 0:
        return 0, np.zeros(len(first), dtype=np.int64)
    where = np.full(id_space, -1, dtype=np.int64)
    where[second.ravel()] = np.repeat(np.arange(len(second), dtype=np.int64), second.shape[1])
    later = where[first]  # (batches of first, b): batch in `second`, -1 if absent
    present = (later >= 0).sum(axis=1)
    rows = np.broadcast_to(np.arange(len(first), dtype=np.int64)[:, None], first.shape)
    cell = rows[later >= 0] * len(second) + later[later >= 0]
    _, counts = np.unique(cell, return_counts=True)
    return int((counts * (counts - 1) // 2).sum()), present


def _falling(x: float, k: int) -> float:
    out = 1.0
    for i in range(k):
        out *= x - i
    return out


def uniform_recurrence(population: int, b: int, present: np.ndarray) -> tuple[float, float]:
    """Chance that a pair of batch-mates meets again under a uniform reshuffle of ``population`` samples
    into batches of ``b``, ``(b−1)/(N−1)``, and the standard deviation of the observed rate when the
    batches of the first epoch have ``present`` of their samples in the second.

    The count of pairs that meet again is a sum over the cells (batch of ``e``, batch of ``e+1``) of
    ``C(c, 2)`` with ``c`` hypergeometric; the cells are treated as independent (their dependence is
    negligible for batches much smaller than the epoch)."""
    present = np.asarray(present, dtype=np.int64)
    eligible = int((present * (present - 1) // 2).sum())
    if population < 2 or eligible == 0:
        return 0.0, 0.0
    p = (b - 1) / (population - 1)
    later_batches = population // b
    var = 0.0
    for m, count in zip(*np.unique(present, return_counts=True), strict=True):
        nf = [_falling(float(m), k) * _falling(b, k) / _falling(population, k) for k in (2, 3, 4)]
        second = (nf[2] + 4 * nf[1] + 2 * nf[0]) / 4  # E[C(c,2)^2] from the factorial moments
        var += int(count) * later_batches * max(second - (nf[0] / 2) ** 2, 0.0)
    return p, math.sqrt(var) / eligible


# -------------------------------------------------------------------------------------------------- reads


def read_spans(reads: Sequence[np.ndarray], offsets: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Bytes of every read the readers make (the reader's span rule: consecutive samples of one shard, gaps
    under 1 MB read through); ``footprint[g]`` is sample ``g``'s bytes in its shard, headers included."""
    cum = np.concatenate([[0], np.cumsum(footprint, dtype=np.int64)])
    out = []
    for gids in reads:
        if len(gids) == 0:
            continue
        shard = np.searchsorted(offsets, gids, side="right") - 1
        gap = cum[gids[1:]] - cum[gids[:-1] + 1]
        new = np.concatenate(
            [[True], (shard[1:] != shard[:-1]) | (gids[1:] <= gids[:-1]) | (gap >= GAP_READ_THROUGH)]
        )
        starts = np.flatnonzero(new)
        ends = np.concatenate([starts[1:], [len(gids)]]) - 1
        out.append(cum[gids[ends] + 1] - cum[gids[starts]])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------------------------------------------- report


@dataclass
class GroupMix:
    """How one labelling (a JSON field, the source of a mix) mixes in batches."""

    name: str
    groups: int
    distinct_mean: float
    distinct_p5: float
    distinct_uniform: float
    distinct_sigma: float
    pair_lift: float
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per group (at most 20 largest): share of the epoch, and min/mean/max share of a batch."""


@dataclass
class ShuffleReport:
    """The shuffle quality of one epoch (and its successor), against a uniform shuffle of the same samples."""

    epoch: int
    samples: int
    shards: int
    batch_size: int
    world_size: int
    num_workers: int
    batches: int
    distinct_mean: float
    distinct_p5: float
    distinct_uniform: float
    distinct_uniform_equal: float
    distinct_sigma: float
    same_shard_lift: float
    recurrence: float
    recurrence_uniform: float
    recurrence_sigma: float
    reads: int
    read_mean_bytes: float
    read_median_bytes: float
    read_amplification: float
    settings: dict[str, Any] = field(default_factory=dict)
    groups: list[GroupMix] = field(default_factory=list)

    @property
    def mates_again(self) -> float:
        """Last epoch's batch-mates an image meets again (``recurrence × (b−1)``)."""
        return self.recurrence * (self.batch_size - 1)

    @property
    def mates_again_uniform(self) -> float:
        return self.recurrence_uniform * (self.batch_size - 1)

    @property
    def distinct_fraction(self) -> float:
        return self.distinct_mean / self.distinct_uniform if self.distinct_uniform else 0.0

    @property
    def recurrence_ratio(self) -> float:
        return self.recurrence / self.recurrence_uniform if self.recurrence_uniform else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            mates_again=self.mates_again,
            mates_again_uniform=self.mates_again_uniform,
            distinct_fraction=self.distinct_fraction,
            recurrence_ratio=self.recurrence_ratio,
        )
        return d

    def lines(self) -> list[str]:
        b = self.batch_size
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        out = [
            f"epoch {self.epoch}: {self.samples:,} samples in {self.shards:,} shards, {self.world_size} rank(s) x "
            f"{self.num_workers} reader(s), {self.batches:,} batches of {b}"
            + (f" ({settings})" if settings else ""),
            f"distinct shards per batch: mean {self.distinct_mean:.1f}, p5 {self.distinct_p5:.0f}; uniform "
            f"{self.distinct_uniform:.1f} ({100 * self.distinct_fraction:.0f}% of uniform); same-shard pair lift "
            f"{self.same_shard_lift:.1f}x",
            f"pair recurrence into epoch {self.epoch + 1}: {self.recurrence:.2e}, uniform "
            f"{self.recurrence_uniform:.2e} ({self.recurrence_ratio:.1f}x)",
            f"each image meets ~{self.mates_again:.2f} of last epoch's {b - 1} batch-mates again; uniform: "
            f"{self.mates_again_uniform:.2f}",
            f"reads: {self.reads:,} per epoch, mean {_size(self.read_mean_bytes)}, median "
            f"{_size(self.read_median_bytes)}; bytes read / bytes delivered {self.read_amplification:.2f}",
        ]
        for g in self.groups:
            out.append(
                f"by {g.name} ({g.groups:,} groups): distinct per batch mean {g.distinct_mean:.1f}, p5 "
                f"{g.distinct_p5:.0f}; uniform {g.distinct_uniform:.1f}; same-group pair lift {g.pair_lift:.2f}x"
            )
            for name, s in g.shares.items() if g.groups <= 8 else ():
                out.append(
                    f"  {name}: {100 * s['epoch']:.1f}% of the epoch; per batch min {100 * s['min']:.1f}% "
                    f"mean {100 * s['mean']:.1f}% max {100 * s['max']:.1f}%"
                )
        return out


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def group_mix(name: str, labels: np.ndarray, names: Sequence[str] | None = None) -> GroupMix:
    """Mixing of one labelling over ``(batches, b)`` labels (non-negative integer codes)."""
    b = labels.shape[1]
    codes, flat = np.unique(labels.ravel(), return_inverse=True)
    lab = flat.reshape(labels.shape)
    sizes = np.bincount(flat)
    distinct = distinct_per_batch(lab)
    mean, sigma = uniform_distinct(sizes, b)
    same, pairs = same_label_pairs(lab)
    rate = uniform_same_label_rate(sizes)
    shares: dict[str, dict[str, float]] = {}
    for g in np.argsort(-sizes, kind="stable")[:20].tolist():
        per_batch = (lab == g).sum(axis=1) / b
        label = names[int(codes[g])] if names is not None else str(int(codes[g]))
        shares[label] = {
            "epoch": float(sizes[g] / sizes.sum()),
            "min": float(per_batch.min()),
            "mean": float(per_batch.mean()),
            "max": float(per_batch.max()),
        }
    return GroupMix(
        name=name,
        groups=len(codes),
        distinct_mean=float(distinct.mean()) if len(distinct) else 0.0,
        distinct_p5=float(np.percentile(distinct, 5)) if len(distinct) else 0.0,
        distinct_uniform=mean,
        distinct_sigma=sigma / math.sqrt(max(1, len(lab))),
        pair_lift=(same / pairs) / rate if pairs and rate else 0.0,
        shares=shares,
    )


def report_from_batches(
    first: np.ndarray,
    second: np.ndarray,
    offsets: np.ndarray,
    *,
    epoch: int = 0,
    world_size: int = 1,
    num_workers: int = 1,
    reads: Sequence[np.ndarray] = (),
    footprint: np.ndarray | None = None,
    settings: dict[str, Any] | None = None,
    groups: Sequence[tuple[str, np.ndarray, Sequence[str] | None]] = (),
) -> ShuffleReport:
    """The report for epoch batches ``first`` and the next epoch's ``second`` (``(batches, b)`` arrays of
    global ids into shards starting at ``offsets``). ``groups``: ``(name, label per global id, label names)``."""
    b = first.shape[1] if first.ndim == 2 else 0
    n_ids = int(offsets[-1])
    shard_of = np.searchsorted(offsets, first, side="right") - 1
    delivered = np.unique(first.ravel())
    shard_sizes = np.bincount(
        np.searchsorted(offsets, delivered, side="right") - 1, minlength=len(offsets) - 1
    )
    distinct = distinct_per_batch(shard_of)
    mean, sd = uniform_distinct(shard_sizes, b)
    present = int((shard_sizes > 0).sum())
    same, pairs = same_label_pairs(shard_of)
    rate = uniform_same_label_rate(shard_sizes)
    again, present_later = recurrence(first, second, n_ids)
    eligible = int((present_later * (present_later - 1) // 2).sum())
    p_uni, p_sd = uniform_recurrence(int(second.size), b, present_later)
    spans = read_spans(reads, offsets, footprint) if footprint is not None else np.zeros(0, dtype=np.int64)
    delivered_bytes = float(footprint[first.ravel()].sum()) if footprint is not None and first.size else 0.0
    return ShuffleReport(
        epoch=epoch,
        samples=int(first.size),
        shards=present,
        batch_size=b,
        world_size=world_size,
        num_workers=num_workers,
        batches=len(first),
        distinct_mean=float(distinct.mean()) if len(distinct) else 0.0,
        distinct_p5=float(np.percentile(distinct, 5)) if len(distinct) else 0.0,
        distinct_uniform=mean,
        distinct_uniform_equal=present * (1 - (1 - 1 / present) ** b) if present else 0.0,
        distinct_sigma=sd / math.sqrt(max(1, len(first))),
        same_shard_lift=(same / pairs) / rate if pairs and rate else 0.0,
        recurrence=again / eligible if eligible else 0.0,
        recurrence_uniform=p_uni,
        recurrence_sigma=p_sd,
        reads=len(spans),
        read_mean_bytes=float(spans.mean()) if len(spans) else 0.0,
        read_median_bytes=float(np.median(spans)) if len(spans) else 0.0,
        read_amplification=float(spans.sum()) / delivered_bytes if delivered_bytes else 0.0,
        settings=dict(settings or {}),
        groups=[group_mix(name, lab[first], names) for name, lab, names in groups],
    )


def plan_report(
    planner: EpochPlanner,
    world_size: int,
    num_workers: int,
    *,
    epoch: int = 0,
    footprint: Callable[[np.ndarray], np.ndarray] | np.ndarray | None = None,
    settings: dict[str, Any] | None = None,
    groups: Sequence[tuple[str, np.ndarray, Sequence[str] | None]] = (),
) -> ShuffleReport:
    """The report of ``planner``'s epochs ``epoch`` and ``epoch + 1`` for a topology (no I/O beyond what
    ``planner.sizes`` and ``footprint`` do). ``footprint``: bytes of each sample in its shard (an array over
    global ids, or a function of them) for the read figures."""
    offsets = shard_offsets(planner.p.counts)
    first, reads = epoch_batches(planner, epoch, world_size, num_workers)
    second, _ = epoch_batches(planner, epoch + 1, world_size, num_workers)
    fp: np.ndarray | None
    if callable(footprint):
        fp = footprint(np.arange(int(offsets[-1]), dtype=np.int64))
    else:
        fp = footprint
    return report_from_batches(
        first,
        second,
        offsets,
        epoch=epoch,
        world_size=world_size,
        num_workers=num_workers,
        reads=reads,
        footprint=fp,
        settings=settings,
        groups=groups,
    )


__all__ = [
    "GroupMix",
    "ShuffleReport",
    "distinct_per_batch",
    "epoch_batches",
    "group_mix",
    "plan_report",
    "read_spans",
    "recurrence",
    "report_from_batches",
    "same_label_pairs",
    "uniform_distinct",
    "uniform_recurrence",
    "uniform_same_label_rate",
]
