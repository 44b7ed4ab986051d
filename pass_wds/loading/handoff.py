"""How a batch leaves a DataLoader worker: reused shared-memory arenas instead of a new segment per batch.

Why: torch's default hand-off gives every tensor of every batch a fresh shared-memory segment. The worker pays
for creating and zero-filling it (``fallocate``), faulting each page in and unmapping it; the main process
pays for receiving its file descriptor over a socket, mapping it and faulting the pages in again. For a
SimCLR batch (32 × two 224² uint8 views, 9.6 MB) that was ~13 % of a worker's CPU time and ~0.08 ms per image
in the main process (docs/loader.md, "Worker processes"). Here each worker keeps a few arenas (one shared
segment per batch in flight, made once) and the main process maps each arena once:

* the worker stacks a batch's tensors straight into a free arena (:meth:`ArenaWriter.acquire`), marks it
  busy in a small shared table, and sends only ``(arena, generation, offset, shape, stride)`` per tensor;
  the arena's segment itself travels (as a torch shared tensor) only until the main process has mapped it;
* the main process turns the references back into tensors while unpickling (:func:`_rebuild_lease`), on
  one *lease* per batch (:func:`pass_wds.buffers.lease`): a tensor over the arena's bytes whose last view,
  when freed, marks the arena free again. An arena is therefore never rewritten while any tensor of its batch is alive,
  whatever the training loop keeps; when every arena of a worker is busy the worker falls back to a fresh
  segment for that batch, exactly as before.

A batch discarded by the DataLoader (an interrupted epoch) is unpickled and dropped like any other, which
releases its arena. Batches are byte-for-byte what the plain hand-off delivers (tests/test_handoff.py).

The main-process side is found from the pickled reference by a per-process table keyed by a random token
(:data:`_TABLES`): unpickling has no other way to reach the loader that owns the arenas, which is also why
torch keeps a per-process cache of shared storages.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import default_convert

from pass_wds.buffers import lease

ALIGN = 64  # byte alignment of each tensor inside an arena
_PASS_THROUGH = ("__key__", "__url__", "json", "__stats__")  # never hold numpy values: left as they are

# token -> main-process side of a loader's arenas (weak: the table lives as long as its loader)
_TABLES: weakref.WeakValueDictionary[str, BatchArenas] = weakref.WeakValueDictionary()


class BatchArenas:
    """The arenas of one loader's DataLoader workers: a shared table (picklable into the workers) and, in the
    process that made it, the mapping of every arena it has received.

    ``flags[w, s]``: 1 while arena ``s`` of worker ``w`` holds a batch that is in flight or alive in the main
    process (set by the worker, cleared by the main process when the batch's last tensor is freed);
    ``known[w, s]``: the generation of that arena the main process has mapped (the worker sends the segment
    itself until then); ``gens[w, 0]``: the last generation worker ``w`` gave out (kept across worker
    restarts, so that a new process never reuses a number the main process has mapped)."""

    def __init__(self, workers: int, slots: int) -> None:
        if workers < 1 or slots < 1:
            raise ValueError(f"need >= 1 worker and slot, got {workers}, {slots}")
        self.token = secrets.token_hex(8)
        self.slots = slots
        self.table = torch.zeros((3, workers, slots), dtype=torch.int64).share_memory_()
        self._owner = os.getpid()
        self._maps: dict[tuple[int, int], tuple[int, torch.Tensor, np.ndarray]] = {}
        self._lock = threading.Lock()
        _TABLES[self.token] = self

    def __getstate__(self) -> dict[str, Any]:
        return {"token": self.token, "slots": self.slots, "table": self.table, "_owner": self._owner}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._maps = {}
        self._lock = threading.Lock()

    @property
    def workers(self) -> int:
        return int(self.table.shape[1])

    def busy(self) -> int:
        """Arenas holding a batch now (in flight or alive in the main process)."""
        return int(self.table[0].sum())

    def mapped_bytes(self) -> int:
        """Bytes of arenas the main process has mapped (they are reused, not reallocated)."""
        return sum(int(t.numel()) for _, t, _ in self._maps.values())

    # -- main process ---------------------------------------------------------------------------------
    def lease(
        self, worker: int, slot: int, gen: int, segment: torch.Tensor | None, nbytes: int
    ) -> torch.Tensor:
        """A uint8 tensor over the first ``nbytes`` of arena ``(worker, slot)``; freeing its last view frees
        the arena for the worker."""
        with self._lock:
            if segment is not None:
                mapped = self._maps.get((worker, slot))
                if mapped is None or mapped[0] != gen:
                    self._maps[(worker, slot)] = (gen, segment, segment.numpy())
                self.table[1, worker, slot] = gen
            mapped = self._maps.get((worker, slot))
            if mapped is None or mapped[0] != gen:
                raise RuntimeError(
                    f"batch arena {worker}/{slot} generation {gen} was never received (loader bug)"
                )
            buffer = mapped[2]
        return lease(buffer, nbytes, functools.partial(_release, self.table, worker, slot))

    # -- worker process -------------------------------------------------------------------------------
    def writer(self) -> ArenaWriter | None:
        """This DataLoader worker's writer; None outside a worker (nothing to hand off)."""
        info = get_worker_info()
        if info is None or info.id >= self.workers:
            return None
        w = self.__dict__.get("_writer")
        if w is None or w.worker != info.id or w.pid != os.getpid():
            w = ArenaWriter(self, info.id)
            self.__dict__["_writer"] = w
        return w


def _release(table: torch.Tensor, worker: int, slot: int) -> None:
    table[0, worker, slot] = 0


class Arena:
    """One batch's space in an arena: hands out tensors laid out back to back (``ALIGN``-aligned)."""

    def __init__(self, writer: ArenaWriter, slot: int, gen: int, buffer: torch.Tensor) -> None:
        self.writer, self.slot, self.gen, self.buffer = writer, slot, gen, buffer
        self.used = 0

    def empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        n = int(np.prod(shape)) * dtype.itemsize
        start = -(-self.used // ALIGN) * ALIGN
        if start + n > self.buffer.numel():
            raise ValueError(f"arena of {self.buffer.numel()} bytes cannot hold {start + n}")
        self.used = start + n
        return self.buffer[start : start + n].view(dtype).view(tuple(shape))

    def owns(self, t: torch.Tensor) -> bool:
        return t.device.type == "cpu" and t.untyped_storage().data_ptr() == self.buffer.data_ptr()

    def ref(self, t: torch.Tensor, lease: _Lease) -> _ArenaView:
        return _ArenaView(
            lease, t.dtype, int(t.storage_offset()) * t.element_size(), tuple(t.shape), t.stride()
        )


class ArenaWriter:
    """A worker's arenas: reuses a free one (grown when a batch needs more room), else returns None."""

    def __init__(self, arenas: BatchArenas, worker: int) -> None:
        self.arenas, self.worker, self.pid = arenas, worker, os.getpid()
        self.buffers: dict[int, tuple[int, torch.Tensor]] = {}  # slot -> (generation, uint8 segment)
        self._flags = arenas.table[0, worker].numpy()
        self._known = arenas.table[1, worker].numpy()
        self._gens = arenas.table[2, worker].numpy()  # [0]: the last generation given out
        self._pending: Arena | None = None  # acquired, not sent yet

    def acquire(self, nbytes: int) -> Arena | None:
        """A free arena with room for ``nbytes`` (reused, or made for a slot not in use); None when every
        slot holds a batch that is still in flight or alive in the main process."""
        if self._pending is not None:  # its batch was never sent (an error in between): free it here
            self._flags[self._pending.slot] = 0
            self._pending = None
        free = [s for s in range(self.arenas.slots) if self._flags[s] == 0]
        if not free:
            return None
        fits = [s for s in free if s in self.buffers and self.buffers[s][1].numel() >= nbytes]
        if fits:
            slot = fits[0]
            gen, buf = self.buffers[slot]
        else:
            slot = next((s for s in free if s not in self.buffers), free[0])
            self._gens[0] += 1
            gen = int(self._gens[0])
            storage = torch.UntypedStorage._new_shared(max(nbytes, ALIGN))
            buf = torch.empty(0, dtype=torch.uint8).set_(storage)  # type: ignore[call-overload]
            self.buffers[slot] = (gen, buf)
        self._flags[slot] = 1
        self._pending = Arena(self, slot, gen, buf)
        return self._pending

    def lease(self, arena: Arena) -> _Lease:
        """The reference that travels instead of the arena's tensors (with the segment until it is mapped)."""
        if self._pending is arena:
            self._pending = None
        segment = None if int(self._known[arena.slot]) == arena.gen else arena.buffer
        return _Lease(self.arenas.token, self.worker, arena.slot, arena.gen, segment, arena.used)


class _Lease:
    """Pickled reference to one batch's arena; unpickled (once per batch, pickle's memo) into a lease tensor."""

    def __init__(
        self, token: str, worker: int, slot: int, gen: int, segment: torch.Tensor | None, nbytes: int
    ):
        self.args = (token, worker, slot, gen, segment, nbytes)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_lease, self.args)


class _ArenaView:
    """Pickled reference to one tensor of a batch: where it lies in its batch's arena."""

    def __init__(
        self, lease: _Lease, dtype: torch.dtype, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.args = (lease, dtype, offset, shape, stride)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_view, self.args)


def _rebuild_lease(
    token: str, worker: int, slot: int, gen: int, segment: torch.Tensor | None, nbytes: int
) -> torch.Tensor:
    table = _TABLES.get(token)
    if table is None:
        raise RuntimeError(
            "a batch from a pass-wds loader's workers was unpickled outside its loader's process"
        )
    return table.lease(worker, slot, gen, segment, nbytes)


def _rebuild_view(
    lease: torch.Tensor, dtype: torch.dtype, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
) -> torch.Tensor:
    item = dtype.itemsize
    if item == 1:
        return lease.as_strided(shape, stride, offset)
    whole = lease[: lease.numel() // item * item].view(dtype)
    return whole.as_strided(shape, stride, offset // item)


# glibc malloc in the loader's worker processes: blocks below 32 MB from the heap, and up to 32 MB of free heap
# kept instead of returned at once. With the defaults, each batch's float temporaries (the colour ops' 4.8 MB
# chunks, decode buffers) were mmap'd or the heap trimmed and regrown, and every page of them faulted in
# anew: ~2 % of a `simclr-cpu` worker's CPU in page faults (docs/loader.md, "Worker processes").
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
WORKER_MALLOC = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 32 << 20}


def init_worker(_worker_id: int) -> None:
    """The DataLoader's ``worker_init_fn``: tune glibc's allocator for this worker process (not the training
    process); nothing where it is not glibc, or where the user set ``MALLOC_*_THRESHOLD_`` themselves."""
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        for param, value in WORKER_MALLOC.items():
            libc.mallopt(param, value)
    except (OSError, AttributeError):
        pass


ARENA_KEY = "__arena__"  # the Arena a worker's batch was stacked into (removed before the batch is sent)


def to_wire(batch: Any) -> Any:
    """The DataLoader's ``collate_fn`` for pass-wds workers (``batch_size=None``): what torch's
    ``default_convert`` does (numpy values into tensors), without walking the keys, urls and JSON metadata
    (plain Python values, which it would only copy: ~3 % of a decode-only worker's time), and with the
    tensors of the batch's arena replaced by references to it."""
    if not isinstance(batch, dict):
        return default_convert(batch)
    arena: Arena | None = batch.pop(ARENA_KEY, None)
    lease = None if arena is None else arena.writer.lease(arena)
    out = {}
    for k, v in batch.items():
        if k in _PASS_THROUGH:
            out[k] = v
        elif arena is not None and isinstance(v, torch.Tensor) and arena.owns(v):
            out[k] = arena.ref(v, lease)  # type: ignore[arg-type]
        elif (
            arena is not None
            and isinstance(v, list)
            and v
            and all(isinstance(t, torch.Tensor) and arena.owns(t) for t in v)
        ):
            out[k] = [arena.ref(t, lease) for t in v]  # type: ignore[arg-type]
        else:
            out[k] = default_convert(v)
    return out


__all__ = ["ARENA_KEY", "Arena", "ArenaWriter", "BatchArenas", "init_worker", "to_wire"]
