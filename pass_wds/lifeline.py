"""No process outlives its parent: worker processes (make-shards' pool, the Dask cluster make-shards starts,
the loader's DataLoader workers) end within about a second of the process that started them, however it
ended — ``kill -9`` and the OOM killer included, which run no cleanup in the parent.

Two mechanisms, because each has a gap the other covers:

* **A watch thread** in the child polls ``os.getppid()``: when the parent is gone the child is re-parented
  (to init or a subreaper) and the thread ends the process at once with ``os._exit`` — no atexit handlers,
  no joining of queue feeder threads (a DataLoader worker that was sending a batch to a dead rank blocks
  forever in exactly that join). The parent's pid is passed in, not read in the child, so a parent that died
  before the child got this far is caught too (the race ``PR_SET_PDEATHSIG`` alone has).
* **``PR_SET_PDEATHSIG``** (Linux, through ``prctl``): the kernel sends ``SIGKILL`` when the parent dies, even
  while the child holds the GIL in a long C call. It fires when the *thread* that started the child exits,
  so it is only asked for where that thread lives as long as the children (``kernel=True``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading

POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, *, kernel: bool = False, poll: float = POLL_SECONDS) -> None:
    """End this process as soon as ``parent_pid`` is no longer its parent (see the module docstring).

    Call it first thing in a child (an initializer, a ``worker_init_fn``); ``kernel=True`` also asks Linux to
    ``SIGKILL`` it when the parent thread that started it exits.
    """
    if kernel and sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before we could ask: nobody is left to collect our work
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(poll)
        os._exit(1)

    threading.Thread(target=watch, name="pass-wds-lifeline", daemon=True).start()


class ParentWatch:
    """A picklable initializer: ``ParentWatch()`` made in the parent, called in each child
    (``ProcessPoolExecutor(initializer=ParentWatch(kernel=True))``, a DataLoader ``worker_init_fn``)."""

    def __init__(self, *, kernel: bool = False) -> None:
        self.parent_pid = os.getpid()
        self.kernel = kernel

    def __call__(self, *_: object) -> None:
        die_with_parent(self.parent_pid, kernel=self.kernel)


PARENT_ENV = "PASS_WDS_PARENT_PID"
"""Where a Dask worker finds the pid of the make-shards process that started its cluster (``dask_setup``)."""


def dask_setup(worker: object) -> None:
    """Dask's preload hook (``LocalCluster(preload=["pass_wds.lifeline"], env={PARENT_ENV: pid})``): the worker
    processes of a cluster that make-shards started end with make-shards."""
    pid = os.environ.get(PARENT_ENV, "")
    if pid.isdigit():
        die_with_parent(int(pid), kernel=True)


__all__ = ["PARENT_ENV", "POLL_SECONDS", "ParentWatch", "dask_setup", "die_with_parent"]
