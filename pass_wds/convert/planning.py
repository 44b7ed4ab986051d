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
from typing import overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pass_wds.format.manifest import size_spread
from pass_wds.format.tar import BLOCK, END_OF_ARCHIVE


def samples_bytes(image_sizes: np.ndarray, json_sizes: np.ndarray) -> np.ndarray:
    """:func:`pass_wds.format.tar.sample_bytes` of arrays (planning 14M items without a call each)."""
    pad = BLOCK - 1
    return 2 * BLOCK + (image_sizes + pad) // BLOCK * BLOCK + (json_sizes + pad) // BLOCK * BLOCK  # type: ignore[no-any-return]


class Shards(Sequence[list[int]]):
    """The shards of a plan as a sequence of item-index lists, backed by one flat array (no per-item
    objects): ``shards[s]`` is ``order[bounds[s]:bounds[s + 1]]``."""

    def __init__(self, order: np.ndarray, bounds: np.ndarray) -> None:
        self.order = order
        self.bounds = bounds

    def __len__(self) -> int:
        return len(self.bounds) - 1

    @overload
    def __getitem__(self, s: int) -> list[int]: ...
    @overload
    def __getitem__(self, s: slice) -> list[list[int]]: ...
    def __getitem__(self, s: int | slice) -> list[int] | list[list[int]]:
        if isinstance(s, slice):
            return [self[i] for i in range(*s.indices(len(self)))]
        return self.array(s).tolist()  # type: ignore[no-any-return]

    def array(self, s: int) -> np.ndarray:
        if not -len(self) <= s < len(self):
            raise IndexError(s)
        s %= len(self)
        return self.order[self.bounds[s] : self.bounds[s + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.bounds)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Shards):
            return bool(np.array_equal(self.order, other.order) and np.array_equal(self.bounds, other.bounds))
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Shards({len(self)} shards, {len(self.order)} items)"


@dataclass(frozen=True)
class ShardPlan:
    """Which items go to which shard, in write order, and each shard's predicted size in bytes."""

    shards: Shards
    shard_bytes: list[int]
    seed: int
    target_bytes: int

    @property
    def num_samples(self) -> int:
        return len(self.shards.order)

    def spread(self) -> dict[str, float]:
        """Size balance: min/max/mean and the largest deviation from the mean, in percent."""
        return size_spread(self.shard_bytes)


def key_order(keys: Sequence[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Indices that sort ``keys`` as Python's ``sorted`` does (stable; UTF-8 byte order is code point order),
    computed on arrays rather than by sorting 14M Python strings.

    Keys of one byte length (hashes, as in PASS) are viewed as a fixed-width NumPy byte-string array, whose
    stable argsort is ~2x faster than Arrow's string sort; other keys use Arrow's.
    """
    arr = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(list(keys), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    fixed = _fixed_width(arr)
    if fixed is not None:
        return np.argsort(fixed, kind="stable")
    return pc.sort_indices(arr).to_numpy().astype(np.int64)  # type: ignore[no-any-return]


def _fixed_width(arr: pa.Array) -> np.ndarray | None:
    """The strings as a NumPy ``S<n>`` view when all have the same non-zero length and none holds a NUL byte
    (NumPy ignores trailing NULs when comparing); None otherwise."""
    if (
        not len(arr)
        or arr.null_count
        or not pa.types.is_string(arr.type)
        and not pa.types.is_large_string(arr.type)
    ):
        return None
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], width)[arr.offset : arr.offset + len(arr) + 1]
    n = int(offsets[1] - offsets[0])
    if n == 0 or int(offsets[-1] - offsets[0]) != n * len(arr) or np.any(np.diff(offsets) != n):
        return None
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    if not data.all():
        return None
    return data.view(f"S{n}")


_DEAL_CHUNK = 1 << 20  # items converted to Python ints at a time by the dealing loop


def plan_shards(
    keys: Sequence[str] | pa.Array | pa.ChunkedArray,
    sizes: Sequence[int] | np.ndarray,
    *,
    target_bytes: int,
    seed: int,
    max_count: int | None = None,
) -> ShardPlan:
    """Shuffle items globally with ``seed`` and deal them into byte-balanced shards.

    ``sizes`` are each sample's true tar footprint (see :func:`pass_wds.format.tar.sample_bytes`). Items are first put in key
    order, so the plan does not depend on the order inputs were listed in, then permuted with a PCG64
    generator. The number of shards is ``round(total / target_bytes)`` (more if ``max_count`` requires); items
    are dealt largest first to the currently smallest shard with room (ties in shuffled order), so shard sizes
    differ by at most one sample's bytes (in practice far less), and each shard is written in shuffled order.
    Keys may be an Arrow string column; everything per item stays in arrays.
    """
    n = len(keys)
    if len(sizes) != n:
        raise ValueError("keys and sizes must have the same length")
    if target_bytes <= 0:
        raise ValueError("target_bytes must be positive")
    if max_count is not None and max_count < 1:
        raise ValueError("max_count must be >= 1")
    if n == 0:
        return ShardPlan(Shards(np.zeros(0, np.int64), np.zeros(1, np.int64)), [], seed, target_bytes)
    size_arr = np.asarray(sizes, dtype=np.int64)
    order = key_order(keys)
    rng = np.random.Generator(np.random.PCG64(seed))
    sequence = order[rng.permutation(n)]
    del order

    total = int(size_arr.sum())
    num_shards = max(1, round(total / target_bytes))
    if max_count is not None:
        num_shards = max(num_shards, math.ceil(n / max_count))
    num_shards = min(num_shards, n)
    cap = max_count if max_count is not None else n

    # Largest-first greedy: deal items from the biggest down (ties keep the shuffled order) to the lightest
    # shard. Membership stays random (equal sizes are dealt in shuffled order) and the spread is far below one
    # image. The heap holds (bytes so far, shard id): ties go to the lowest id.
    deal = sequence[np.argsort(-size_arr[sequence], kind="stable")]
    shard_of = np.empty(n, dtype=np.int32)
    loads = [END_OF_ARCHIVE] * num_shards
    counts = [0] * num_shards
    heap = [(END_OF_ARCHIVE, s) for s in range(num_shards)]
    for a in range(0, n, _DEAL_CHUNK):
        idx = deal[a : a + _DEAL_CHUNK]
        dealt = []
        for size in size_arr[idx].tolist():
            load, s = heap[0]
            load += size
            loads[s] = load
            dealt.append(s)
            counts[s] += 1
            if counts[s] < cap:
                heapq.heapreplace(heap, (load, s))
            else:
                heapq.heappop(heap)
        shard_of[idx] = dealt
    del deal
    # Each shard in shuffled order: a stable sort of the shuffled sequence by shard.
    by_shard = np.argsort(shard_of[sequence], kind="stable")
    flat = sequence[by_shard]
    bounds = np.zeros(num_shards + 1, dtype=np.int64)
    np.cumsum(np.bincount(shard_of, minlength=num_shards), out=bounds[1:])
    return ShardPlan(Shards(flat, bounds), loads, seed, target_bytes)


def digest(parts: Iterable[str | bytes]) -> str:
    """A stable sha256 over a sequence of strings/bytes (length-prefixed so boundaries count)."""
    h = hashlib.sha256()
    for part in parts:
        b = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
