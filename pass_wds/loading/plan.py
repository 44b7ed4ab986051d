"""Pure epoch planning: which samples each (rank, worker) reads, and in what order. No I/O.

An epoch is a function of a few integers, so every rank computes the same plan independently, and a resumed
run recomputes exactly what was already delivered:

1. shards are cut into segments of ``segment_samples``; segments are permuted with ``(seed, epoch)``, and
   the concatenation, rotated by a random offset, is the epoch *sequence* (resampled mode: segments drawn
   with replacement instead);
2. the sequence is trimmed (``drop``) or padded (``pad``) to a multiple of ``world_size × batch_size``;
3. rank ``r`` gets a contiguous run of ``B`` whole batches, split into contiguous runs per worker so that
   worker ``w`` serves the rank's batches ``w, w+W, w+2W …`` (the DataLoader's round-robin order);
4. each worker's run passes through a byte-bounded shuffle buffer whose output order is simulated from the
   sample sizes and a seeded generator (so it can be recomputed without reading data).

A resume with a different topology starts a new *generation*: the positions not yet delivered, in sequence
order, are planned again (steps 2–4) for the new world size and worker count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

SizesFn = Callable[[np.ndarray], np.ndarray]
"""Maps global sample ids to their byte sizes (what the shuffle buffer holds)."""

_SEQ_TAG = 0x5E9
_SHUF_TAG = 0x5B0F


class HistoryError(ValueError):
    """A history whose generation ``index`` claims more delivered batches than that generation's plan has."""

    def __init__(self, index: int, batches: int, batches_per_rank: int) -> None:
        super().__init__(
            f"state says {batches} batches were delivered, but the epoch has only {batches_per_rank} per rank"
        )
        self.index, self.batches, self.batches_per_rank = index, batches, batches_per_rank


@dataclass(frozen=True)
class Generation:
    """A stretch of an epoch served with one topology; ``batches`` = batches delivered per rank."""

    world_size: int
    num_workers: int
    batches: int = 0


@dataclass(frozen=True)
class PlanParams:
    """Everything besides the topology that an epoch plan depends on."""

    counts: tuple[int, ...]
    seed: int
    batch_size: int
    remainder: str = "drop"
    shuffle: bool = True
    segment_samples: int = 256
    shuffle_buffer_bytes: int = 64_000_000
    epoch_samples: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.remainder not in ("drop", "pad"):
            raise ValueError(f"remainder must be 'drop' or 'pad', got {self.remainder!r}")
        if self.segment_samples < 1:
            raise ValueError(f"segment_samples must be >= 1, got {self.segment_samples}")
        if self.epoch_samples is not None and self.epoch_samples < 1:
            raise ValueError(f"epoch_samples must be >= 1, got {self.epoch_samples}")
        if any(c < 0 for c in self.counts):
            raise ValueError("negative shard sample count")


def shard_offsets(counts: Sequence[int]) -> np.ndarray:
    """Global id of each shard's first sample (``len(counts) + 1`` entries)."""
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)


def segments(counts: Sequence[int], segment_samples: int) -> np.ndarray:
    """``(n, 2)`` array of ``[first global id, length]`` per segment, in shard order."""
    offs = shard_offsets(counts)
    rows = []
    for s, c in enumerate(counts):
        starts = np.arange(0, c, segment_samples, dtype=np.int64)
        if len(starts):
            lengths = np.minimum(segment_samples, c - starts)
            rows.append(np.stack([offs[s] + starts, lengths], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)


def _expand(segs: np.ndarray) -> np.ndarray:
    if len(segs) == 0:
        return np.zeros(0, dtype=np.int64)
    lengths = segs[:, 1]
    starts = np.repeat(segs[:, 0] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return starts + np.arange(int(lengths.sum()), dtype=np.int64)


def epoch_sequence(p: PlanParams, epoch: int) -> np.ndarray:
    """Global sample ids of the epoch in read order (before trimming/padding)."""
    segs = segments(p.counts, p.segment_samples)
    rng = np.random.default_rng([p.seed, epoch, _SEQ_TAG])
    if p.epoch_samples is not None:
        # Resampled mode: draw segments with replacement (weighted by length) until epoch_samples are reached.
        lengths = segs[:, 1].astype(np.float64)
        need = p.epoch_samples
        picks: list[np.ndarray] = []
        total = 0
        while total < need:
            k = max(1, int(np.ceil((need - total) / lengths.mean())))
            chosen = rng.choice(len(segs), size=k, p=lengths / lengths.sum())
            picks.append(chosen)
            total += int(segs[chosen, 1].sum())
        return _expand(segs[np.concatenate(picks)])[:need]
    if not p.shuffle:
        return _expand(segs)
    seq = _expand(segs[rng.permutation(len(segs))])
    # A random rotation moves the trimmed tail (remainder "drop") every epoch, even with a single segment.
    return np.roll(seq, -int(rng.integers(len(seq)))) if len(seq) else seq


def fit_remainder(positions: np.ndarray, group: int, remainder: str) -> tuple[np.ndarray, np.ndarray]:
    """Trim (``drop``) or cyclically pad (``pad``) to a multiple of ``group``; returns ``(kept, dropped)``."""
    n = len(positions)
    extra = n % group
    if remainder == "drop" or n == 0:
        return positions[: n - extra], positions[n - extra :]
    if extra == 0:
        return positions, positions[:0]
    return np.concatenate([positions, np.resize(positions, group - extra)]), positions[:0]


def worker_batches(batches_per_rank: int, num_workers: int, worker: int) -> int:
    """Batches worker ``w`` serves when the DataLoader takes the rank's batch ``j`` from worker ``j % W``."""
    return max(0, -(-(batches_per_rank - worker) // num_workers))


def seen_local_batches(rank_batches_seen: int, num_workers: int, worker: int) -> int:
    """How many of worker ``w``'s batches are among the rank's first ``k`` batches."""
    return worker_batches(rank_batches_seen, num_workers, worker)


def shuffle_order(sizes: np.ndarray, buffer_bytes: int, rng: np.random.Generator) -> np.ndarray:
    """Emission order of a byte-bounded shuffle buffer fed ``sizes`` in order (indices into ``sizes``).

    After each sample enters, random samples leave while the buffer holds more than ``buffer_bytes``; at the
    end it drains in random order. Any reader that holds a sample only until its turn therefore never holds
    more than ``buffer_bytes`` plus one sample.
    """
    n = len(sizes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    u = rng.random(2 * n).tolist()
    size_list = sizes.tolist()
    buf: list[int] = []
    held = 0
    out: list[int] = []
    k = 0
    for i, s in enumerate(size_list):
        buf.append(i)
        held += s
        while held > buffer_bytes and buf:
            j = int(u[k] * len(buf))
            k += 1
            buf[j], buf[-1] = buf[-1], buf[j]
            v = buf.pop()
            held -= size_list[v]
            out.append(v)
    while buf:
        j = int(u[k] * len(buf))
        k += 1
        buf[j], buf[-1] = buf[-1], buf[j]
        out.append(buf.pop())
    return np.asarray(out, dtype=np.int64)


@dataclass
class GenerationPlan:
    """One generation of an epoch: ``base`` holds sequence positions, trimmed/padded for the topology."""

    epoch: int
    index: int
    world_size: int
    num_workers: int
    sequence: np.ndarray
    base: np.ndarray
    dropped: np.ndarray
    batch_size: int = 1

    @property
    def batches_per_rank(self) -> int:
        return len(self.base) // (self.world_size * self.batch_size)

    def run(self, rank: int, worker: int) -> tuple[int, int]:
        """``[start, stop)`` indices into ``base`` read by ``(rank, worker)``."""
        br = self.batches_per_rank
        start = rank * br * self.batch_size
        for w in range(worker):
            start += worker_batches(br, self.num_workers, w) * self.batch_size
        return start, start + worker_batches(br, self.num_workers, worker) * self.batch_size


class EpochPlanner:
    """Computes generation plans and worker orders; ``sizes`` is only called when shuffling is bounded."""

    def __init__(self, params: PlanParams, sizes: SizesFn | None = None) -> None:
        self.p = params
        self.sizes = sizes

    def worker_order(self, plan: GenerationPlan, rank: int, worker: int) -> np.ndarray:
        """Indices into ``plan.base`` in the order worker ``(rank, worker)`` emits them."""
        a, b = plan.run(rank, worker)
        n = b - a
        if not self.p.shuffle or n == 0:
            return np.arange(a, b, dtype=np.int64)
        rng = np.random.default_rng([self.p.seed, plan.epoch, plan.index, rank, worker, _SHUF_TAG])
        if self.sizes is None:
            perm = rng.permutation(n)
        else:
            sizes = self.sizes(plan.sequence[plan.base[a:b]])
            perm = shuffle_order(sizes, self.p.shuffle_buffer_bytes, rng)
        return a + perm

    def seen(self, plan: GenerationPlan, batches: int) -> np.ndarray:
        """Boolean mask over ``plan.base``: delivered within the first ``batches`` batches of every rank."""
        mask = np.zeros(len(plan.base), dtype=bool)
        bs = self.p.batch_size
        for rank in range(plan.world_size):
            for w in range(plan.num_workers):
                k = seen_local_batches(batches, plan.num_workers, w)
                if k:
                    mask[self.worker_order(plan, rank, w)[: k * bs]] = True
        return mask

    def generations(
        self, epoch: int, history: Sequence[Generation], start: np.ndarray | None = None
    ) -> list[GenerationPlan]:
        """Plans of every generation in ``history`` (the last one is the current one).

        ``start``: the epoch's sequence when it does not begin here: the global ids still to deliver of an
        epoch carried over from an earlier revision of the dataset (:meth:`unseen` of that revision's plan,
        mapped onto this one's shards); otherwise the epoch's own sequence."""
        if not history:
            raise ValueError("history needs at least the current generation")
        seq = epoch_sequence(self.p, epoch) if start is None else np.asarray(start, dtype=np.int64)
        remaining = np.arange(len(seq), dtype=np.int64)
        plans: list[GenerationPlan] = []
        for g, gen in enumerate(history):
            group = gen.world_size * self.p.batch_size
            base, dropped = fit_remainder(remaining, group, self.p.remainder)
            plan = GenerationPlan(
                epoch, g, gen.world_size, gen.num_workers, seq, base, dropped, self.p.batch_size
            )
            plans.append(plan)
            if g + 1 < len(history):
                remaining = self._left(plan, gen)
        return plans

    def _left(self, plan: GenerationPlan, gen: Generation) -> np.ndarray:
        """Sequence positions of ``plan`` not delivered after ``gen.batches`` batches per rank: each position
        not yet delivered (in any padded copy) once, in sequence order."""
        if gen.batches > plan.batches_per_rank:
            raise HistoryError(plan.index, gen.batches, plan.batches_per_rank)
        seen = self.seen(plan, gen.batches)
        left = np.zeros(len(plan.sequence), dtype=bool)
        left[plan.base] = True
        left[plan.base[seen]] = False
        return np.flatnonzero(left)

    def unseen(
        self, epoch: int, history: Sequence[Generation], start: np.ndarray | None = None
    ) -> np.ndarray:
        """Global ids, in sequence order, that the epoch had still to deliver after every generation of
        ``history`` (all of them past): what a resume on another revision of the dataset carries over."""
        plans = self.generations(epoch, history, start)
        return plans[-1].sequence[self._left(plans[-1], history[-1])]


def plan_worker_and_batch(dataloader_worker: int, batches_done: int, num_workers: int) -> tuple[int, int]:
    """``(plan worker, its local batch)`` that DataLoader worker ``i`` serves next once the rank has delivered
    ``k`` batches: plan worker ``(k+i) % W`` from its local batch ``(k+i) // W``."""
    j = batches_done + dataloader_worker
    return j % num_workers, j // num_workers
