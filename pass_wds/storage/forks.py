"""Fork safety: a forked child (a DataLoader worker, any ``fork`` multiprocessing child) never touches its
parent's storage connections.

fsspec runs every async filesystem (HTTP, S3, GCS) on one event loop in a background thread. A forked child
inherits that loop's Python objects without its thread, and shares its kernel objects with the parent: the
epoll instance and the sockets are the same open files in both processes. fsspec gives the child a fresh loop
and clears its instance cache, so the inherited filesystems become garbage there; when the child's garbage
collector frees them, their finalizers (``HTTPFileSystem.close_session``, aiohttp's connector) close the
parent's pooled connections from the child. Closing a transport unregisters its socket from the shared epoll,
so the parent's selector still believes a keep-alive connection is watched while the kernel no longer reports
it: the next request on it never wakes up (a read timeout per try and connection, where none is set
aiohttp's 5-minute session timeout). A TLS connection closed there would also write its close alert into the
parent's stream.

So right after a fork, in the child, every descriptor of the inherited loop (its epoll, its self-pipe, its
sockets) is pointed at ``/dev/null``: whatever the child then does with them reaches nothing of the parent's,
and the Python objects that own them close their copy as usual. The parent is not touched. Registered once, on
import of :mod:`pass_wds.storage`; fsspec is looked up, never imported, here.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from typing import Any

_at_fork: list[Any] = []  # the fsspec loop, captured in the parent just before a fork; read in the child


def _fsspec_loop() -> Any:
    asyn = sys.modules.get("fsspec.asyn")
    loop = asyn.loop[0] if asyn is not None else None
    return loop if loop is not None and not loop.is_closed() else None


def _loop_descriptors(loop: Any) -> set[int]:
    """The file descriptors an asyncio selector loop owns: its selector (epoll), and the sockets it watches
    or carries (the self-pipe, connections; a paused connection is not watched but still has an open
    transport). Loops of another kind (uvloop) own none that can be found here; they are left alone."""
    selector = getattr(loop, "_selector", None)
    epoll: set[int] = set()
    with contextlib.suppress(Exception):
        epoll.add(selector.fileno())  # type: ignore[union-attr]
    fds: set[int] = set()
    with contextlib.suppress(Exception):
        fds.update(selector.get_map())  # type: ignore[union-attr]
    transports = list(getattr(loop, "_transports", {}).items())
    with contextlib.suppress(Exception):  # a closing transport may have closed its socket already: skip it
        fds.update(fd for fd, t in transports if not t.is_closing())
    for name in ("_ssock", "_csock"):
        with contextlib.suppress(Exception):
            fds.add(getattr(loop, name).fileno())
    return {fd for fd in epoll if isinstance(fd, int) and fd > 2} | {fd for fd in fds if _is_socket(fd)}


def _is_socket(fd: Any) -> bool:
    try:
        return isinstance(fd, int) and fd > 2 and stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def _before_fork() -> None:
    _at_fork[:] = [loop] if (loop := _fsspec_loop()) is not None else []


def _after_fork_in_parent() -> None:
    _at_fork.clear()


def _after_fork_in_child() -> None:
    loops, _at_fork[:] = list(_at_fork), []
    if not loops:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for loop in loops:
            for fd in _loop_descriptors(loop) - {devnull}:
                with contextlib.suppress(OSError):
                    os.dup2(devnull, fd, inheritable=False)
    finally:
        os.close(devnull)


if hasattr(os, "register_at_fork"):  # POSIX; spawned children inherit nothing
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
