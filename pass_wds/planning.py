"""Shard planning: pure functions from (keys, sizes, seed, target) to a shard plan. No I/O.

Because the plan is computed before anything is written, every shard is an independent task: the same plan
can be executed by local processes, Dask or a Slurm array, in any order, and gives byte-identical shards.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from pass_wds.format.manifest import size_spread
from pass_wds.format.tar import END_OF_ARCHIVE


@dataclass(frozen=True)
class ShardPlan:
    """Which items go to which shard, in write order, and each shard's predicted size in bytes."""

    shards: list[list[int]]
    shard_bytes: list[int]
    seed: int
    target_bytes: int

    @property
    def num_samples(self) -> int:
        return sum(len(s) for s in self.shards)

    def spread(self) -> dict[str, float]:
        """Size balance: min/max/mean and the largest deviation from the mean, in percent."""
        return size_spread(self.shard_bytes)


def plan_shards(
    keys: Sequence[str],
    sizes: Sequence[int] | np.ndarray,
    *,
    target_bytes: int,
    seed: int,
    max_count: int | None = None,
) -> ShardPlan:
    """Shuffle items globally with ``seed`` and deal them into byte-balanced shards.

    ``sizes`` are each sample's true tar footprint (see :func:`sample_bytes`). Items are first put in key
    order, so the plan does not depend on the order inputs were listed in, then permuted with a PCG64
    generator. The number of shards is ``round(total / target_bytes)`` (more if ``max_count`` requires); items
    are dealt largest first to the currently smallest shard with room (ties in shuffled order), so shard sizes
    differ by at most one sample's bytes (in practice far less), and each shard is written in shuffled order.
    """
    n = len(keys)
    if len(sizes) != n:
        raise ValueError("keys and sizes must have the same length")
    if target_bytes <= 0:
        raise ValueError("target_bytes must be positive")
    if max_count is not None and max_count < 1:
        raise ValueError("max_count must be >= 1")
    if n == 0:
        return ShardPlan([], [], seed, target_bytes)
    size_arr = np.asarray(sizes, dtype=np.int64)
    order = np.array(sorted(range(n), key=keys.__getitem__), dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(seed))
    sequence = order[rng.permutation(n)]

    total = int(size_arr.sum())
    num_shards = max(1, round(total / target_bytes))
    if max_count is not None:
        num_shards = max(num_shards, math.ceil(n / max_count))
    num_shards = min(num_shards, n)
    cap = max_count if max_count is not None else n

    # Largest-first greedy: deal items from the biggest down (ties keep the shuffled order) to the lightest
    # shard. Membership stays random (equal sizes are dealt in shuffled order) and the spread is far below one
    # image. Each shard is then written in shuffled order.
    position = np.empty(n, dtype=np.int64)
    position[sequence] = np.arange(n)
    deal = sequence[np.argsort(-size_arr[sequence], kind="stable")]
    members: list[list[int]] = [[] for _ in range(num_shards)]
    loads = [END_OF_ARCHIVE] * num_shards
    heap = [(END_OF_ARCHIVE, s) for s in range(num_shards)]  # (bytes so far, shard id): ties → lowest id
    for idx in deal.tolist():
        load, s = heapq.heappop(heap)
        members[s].append(idx)
        loads[s] = load + int(size_arr[idx])
        if len(members[s]) < cap:
            heapq.heappush(heap, (loads[s], s))
    shards = [sorted(m, key=position.__getitem__) for m in members]
    return ShardPlan(shards, loads, seed, target_bytes)


def digest(parts: Iterable[str | bytes]) -> str:
    """A stable sha256 over a sequence of strings/bytes (length-prefixed so boundaries count)."""
    h = hashlib.sha256()
    for part in parts:
        b = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
