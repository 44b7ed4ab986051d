"""Host memory handed out as tensors whose release is seen: the one primitive behind reusing batch buffers.

A batch the loader delivers may be kept by the training loop for any time, so a buffer can be reused only once
every tensor that views it is gone. :func:`lease` makes a tensor over a numpy buffer whose storage keeps a
fresh view object alive; when the storage is freed (the last tensor or view of it dies) that object dies and
``on_release`` runs. :mod:`pass_wds.loading.handoff` uses it for the workers' shared-memory arenas,
:class:`BufferPool` for the float batches of the CPU device stage.

Why a pool for those: each batch's float32 views (2 × 19 MB for SimCLR at batch 32) allocated with
``torch.empty`` and freed a batch later made glibc's heap grow to ~0.8 GB in the main process (its
dynamic mmap threshold moves such blocks onto the heap, where they fragment); reused buffers stay at the
few batches alive at once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import torch


def lease(buffer: np.ndarray, nbytes: int, on_release: Callable[[], None]) -> torch.Tensor:
    """A uint8 tensor over the first ``nbytes`` of ``buffer`` (1-D uint8); ``on_release()`` runs once the
    tensor's storage is freed, i.e. when no tensor viewing it is left."""
    view = buffer[:nbytes]
    weakref.finalize(view, on_release)
    if nbytes == 0:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(view, dtype=torch.uint8)


class BufferPool:
    """Reused host buffers for batch-sized outputs (``keep`` free buffers per size at most)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._free: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` and ``dtype`` on a reused buffer."""
        nbytes = int(np.prod(shape)) * dtype.itemsize
        with self._lock:
            free = self._free.get(nbytes)
            buf = free.pop() if free else None
        if buf is None:
            buf = np.empty(nbytes, dtype=np.uint8)
        return lease(buf, nbytes, lambda: self._give_back(buf)).view(dtype).view(tuple(shape))

    def _give_back(self, buf: np.ndarray) -> None:
        with self._lock:
            free = self._free.setdefault(buf.nbytes, [])
            if len(free) < self.keep:
                free.append(buf)

    def free_bytes(self) -> int:
        with self._lock:
            return sum(b.nbytes for bufs in self._free.values() for b in bufs)


__all__ = ["BufferPool", "lease"]
