"""The output folder of make-shards: one writer at a time, only what it wrote, resumable.

* :class:`OutputLock`: an exclusive ``flock`` for a full run (shared for ``--shard-range`` tasks); on object
  stores a best-effort lock object with a heartbeat.
* Ownership: an output may hold only what pass-wds wrote there, as the output itself lists it (its manifest
  and ``_state/plan.json``, see :func:`pass_wds.format.manifest.listed_names`); anything else refuses the run
  unless ``--overwrite``, and is never replaced or removed.
* Resume records: ``_state/plan.json`` holds the plan digest when a run starts and ``_state/shard-NNNNNN.json``
  each finished shard. A rerun with the same digest keeps shards whose record and size match; a different
  digest is refused unless ``--overwrite``. The finish step removes ``_state/`` after writing the manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pass_wds import storage
from pass_wds.config import ConfigError
from pass_wds.convert.options import ConvertConfig
from pass_wds.convert.writing import ShardResult
from pass_wds.format import manifest

STATE = "_state"
LOCK = "lock"  # _state/lock: flock'ed by every run into a local output
_PROBE = ".pass-wds-probe"  # storage.check_writable's probe object


def check_output_writable(
    output: str, storage_options: dict[str, Any] | None = None, retry: storage.RetryPolicy | None = None
) -> None:
    """Fail before any real work when the output cannot be written: a local folder is checked without writing;
    an object store gets a tiny probe object (endpoint, bucket and permission), removed at once."""
    if not storage.is_local(output):
        storage.check_writable(output, storage_options, retry=retry)
        return
    path = output.removeprefix("file://")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"output exists and is not a folder: {output}")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output is not writable: {output} ({probe} does not allow writing)")


class OutputLock:
    """One writer per output: an exclusive ``flock`` on ``OUT/_state/lock`` for a full run, a shared one for
    ``--shard-range`` tasks (Slurm array tasks write disjoint shards of one output side by side). A second run
    is refused at once with one line, before it lists anything. The kernel releases the lock when the
    process dies, so a killed run never blocks its rerun. Object stores have no such primitive: there a lock
    *object* ``_state/lock.json`` (host, pid, token, heartbeat every 30 s) is best-effort: it is stale when
    its heartbeat is over 2 minutes old or its process, on this host, is gone (see docs/security.md).

    Folders made only to hold the lock are removed again unless the run claimed the output (:meth:`keep`).
    """

    HEARTBEAT, STALE = 30.0, 120.0

    def __init__(self, cfg: ConvertConfig, *, shared: bool) -> None:
        self.out = str(cfg.output)
        self.so = cfg.storage_options
        self.retry = cfg.retry
        self.shared = shared
        self._fd: int | None = None
        self._created: list[str] = []
        self._made_lock = False
        self._kept = False
        self._remote: str | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _remote_record(self) -> bytes:
        return json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "token": self._token, "time": time.time()}
        ).encode()

    def _remote_holder(self) -> dict[str, Any] | None:
        """The live holder of the remote lock object, if any (None: absent, ours or stale)."""
        assert self._remote is not None
        held = read_json(self._remote, self.so, self.retry)
        if held is None or held.get("token") == self._token:
            return None
        age = time.time() - float(held.get("time") or 0)
        pid = held.get("pid")
        dead_here = (
            held.get("host") == socket.gethostname()
            and isinstance(pid, int)
            and not storage.process_alive(pid)
        )
        return None if age > self.STALE or dead_here else held

    def _enter_remote(self) -> None:
        if self.shared:  # --shard-range tasks share an output by design; only full runs take the object lock
            return
        self._remote = storage.join(self.out, STATE, "lock.json")
        self._token = os.urandom(8).hex()
        for _ in range(
            2
        ):  # write, then read back: of two racing writers, the one that reads another's token loses
            held = self._remote_holder()
            if held is not None:
                self._remote = None
                raise ConfigError(
                    f"output {storage.redact(self.out)} is in use by another make-shards run "
                    f"(lock object _state/lock.json from {held.get('host')} pid {held.get('pid')}, "
                    f"refreshed {time.time() - float(held.get('time') or 0):.0f}s ago; stale after "
                    f"{self.STALE:.0f}s); wait for it to finish or choose another --output"
                )
            storage.write_bytes(self._remote, self._remote_record(), self.so)
        self._beat = threading.Thread(target=self._heartbeat, name="pass-wds-lock", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT):
            with contextlib.suppress(Exception):  # a missed beat only makes the lock look older
                storage.write_bytes(str(self._remote), self._remote_record(), self.so)

    def __enter__(self) -> OutputLock:
        if not storage.is_local(self.out):
            self._enter_remote()
            return self
        root = os.path.abspath(self.out.removeprefix("file://"))
        state = os.path.join(root, STATE)
        self._created = [d for d in (root, state) if not os.path.isdir(d)]
        os.makedirs(state, exist_ok=True)
        self._path = os.path.join(state, LOCK)
        self._made_lock = not os.path.exists(self._path)
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            self._release()
            raise ConfigError(
                f"output {self.out} is in use by another make-shards run (lock: {self._path}); "
                "wait for it to finish or choose another --output"
            ) from None
        return self

    def keep(self) -> None:
        """The run has claimed the output: what it made stays."""
        self._kept = True

    def _release(self) -> None:
        if self._remote is not None:
            self._stop.set()
            if self._beat is not None:
                self._beat.join()
            with contextlib.suppress(Exception):  # unreachable store: the lock goes stale on its own
                held = read_json(self._remote, self.so, self.retry)
                if held is not None and held.get("token") == self._token:
                    storage.remove(self._remote, self.so)
            self._remote = None
        if self._fd is None:
            return
        if not self._kept and (self._created or self._made_lock) and self._alone():
            with contextlib.suppress(OSError):
                os.remove(self._path)  # a lock file this run made (a folder of a user's files stays)
            for d in reversed(self._created):
                with contextlib.suppress(OSError):
                    os.rmdir(d)  # only when empty
        os.close(self._fd)
        self._fd = None

    def _alone(self) -> bool:
        """Whether no other run holds the lock file (a shared ``--shard-range`` task may): only then may it go."""
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        self._release()


def state_url(cfg: ConvertConfig, name: str) -> str:
    return storage.join(str(cfg.output), STATE, name)


def read_json(
    url: str, so: dict[str, Any], retry: storage.RetryPolicy | None = None
) -> dict[str, Any] | None:
    try:
        data = json.loads(storage.read_bytes(url, so, retry=retry))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def owned_entries(cfg: ConvertConfig) -> set[str]:
    """Names directly in the output that an earlier pass-wds run wrote there, as that output itself lists them:
    the shards and indexes of its manifest and of its ``_state/plan.json``, and the side files next to them.

    Never a name pattern: a ``pass-backup.tar`` or someone's ``*.tmp-*`` file is not ours because of its name.
    """
    out, so = str(cfg.output), cfg.storage_options
    owned = {STATE, _PROBE} | manifest.listed_names(
        read_json(storage.join(out, manifest.INDEX), so, cfg.retry)
    )
    plan = read_json(state_url(cfg, "plan.json"), so, cfg.retry)
    if plan is not None and isinstance(plan.get("plan_digest"), str):
        owned |= manifest.OUTPUT_FILES
        name, count = plan.get("name", cfg.name), plan.get("shards")
        if isinstance(name, str) and isinstance(count, int) and 0 <= count <= 10_000_000:
            owned |= {f(name, i) for i in range(count) for f in (manifest.shard_name, manifest.idx_name)}
    return owned


def check_output_owned(cfg: ConvertConfig) -> set[str]:
    """Refuse an output folder holding anything pass-wds did not write (unless ``--overwrite``), before any
    input is read; returns those foreign names (they are never deleted or rewritten)."""
    out, so = str(cfg.output), cfg.storage_options
    entries = storage.listdir(out, so, retry=cfg.retry)
    if not entries:
        return set()
    owned = owned_entries(cfg)
    foreign = {e for e in entries if e not in owned and storage.temp_of(e) not in owned}
    if foreign and not cfg.overwrite:
        shown = sorted(foreign)
        names = ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
        raise ConfigError(
            f"output {storage.redact(out)} holds entries pass-wds did not write ({names}); "
            "use a new or empty --output, or --overwrite to write next to them (they are left untouched)"
        )
    _refuse_collisions(cfg, foreign, manifest.OUTPUT_FILES | {STATE})
    return foreign


def _refuse_collisions(cfg: ConvertConfig, foreign: set[str], ours: set[str] | frozenset[str]) -> None:
    """A foreign file under a name this run writes would be replaced: never, not even with ``--overwrite``."""
    clash = sorted(foreign & ours)
    if clash:
        raise ConfigError(
            f"output {storage.redact(str(cfg.output))} holds {', '.join(clash[:4])}, which pass-wds did not "
            "write but would replace; move it away or choose another --output"
        )


def claim_output(
    cfg: ConvertConfig, digest: str, shards: int, foreign: set[str], *, partial: bool = False
) -> None:
    """Refuse to mix two different plans in one output (unless --overwrite); record ours.

    A partial run (``--shard-range``) may share the output with other tasks running at the same time, so it
    leaves temporary files alone: the final run, alone, removes leftovers (of its own files only).
    """
    out, so = str(cfg.output), cfg.storage_options
    planned = {f(cfg.name, i) for i in range(shards) for f in (manifest.shard_name, manifest.idx_name)}
    _refuse_collisions(cfg, foreign, planned)
    previous = read_json(state_url(cfg, "plan.json"), so, cfg.retry) or read_json(
        storage.join(out, manifest.INDEX), so, cfg.retry
    )
    if previous is not None and previous.get("plan_digest") != digest:
        if not cfg.overwrite:
            raise ConfigError(
                f"output {storage.redact(out)} holds a different conversion (other inputs or options); "
                "use a new --output, or --overwrite to replace it"
            )
        _clear_output(cfg, keep=foreign)
    storage.makedirs(out, so, retry=cfg.retry)
    if not partial:
        # temp files of names the output itself lists (a crashed run's leftovers); a temp file named for one of
        # our names in a folder that never held our output is someone else's
        storage.remove_temp_files(out, so, names=owned_entries(cfg) - {STATE}, keep=foreign, retry=cfg.retry)
    storage.write_bytes(
        state_url(cfg, "plan.json"),
        manifest.dumps({"plan_digest": digest, "name": cfg.name, "shards": shards}),
        so,
    )


def _clear_output(cfg: ConvertConfig, keep: set[str] | frozenset[str] = frozenset()) -> None:
    """``--overwrite``: remove what the earlier output itself lists (manifest, state), nothing else."""
    out, so = str(cfg.output), cfg.storage_options
    owned = owned_entries(cfg) - {STATE, _PROBE}
    for name in storage.listdir(out, so, retry=cfg.retry):
        if name not in keep and (name in owned or storage.temp_of(name) in owned):
            storage.remove(storage.join(out, name), so)
    _remove_state_files(cfg, keep_lock=True)  # the lock is held by this run


_SHARD_RECORD = re.compile(r"shard-(\d{6,})\.json")


def _ours_in_state(cfg: ConvertConfig) -> Callable[[str], bool]:
    """Whether a name in ``_state/`` is one pass-wds writes there, by name and as the output's own
    ``plan.json`` records it: ``plan.json``, the locks, ``shard-NNNNNN.json`` for the shards of that plan,
    and the temp files of their atomic writes. Anything else (a user's notes, a copy, a subfolder) is not."""
    plan = read_json(state_url(cfg, "plan.json"), cfg.storage_options, cfg.retry) or {}
    recorded = plan.get("shards")
    count = recorded if isinstance(recorded, int) else 0

    def ours(name: str) -> bool:
        name = storage.temp_of(name) or name
        if name in ("plan.json", LOCK, "lock.json"):
            return True
        m = _SHARD_RECORD.fullmatch(name)
        return m is not None and int(m.group(1)) < count

    return ours


def _remove_state_files(cfg: ConvertConfig, *, keep_lock: bool = False) -> None:
    """Remove the files pass-wds wrote in ``_state/`` (never recursively, never a name it did not write);
    the folder itself goes when nothing else is left in it."""
    out, so = str(cfg.output), cfg.storage_options
    state = storage.join(out, STATE)
    ours = _ours_in_state(cfg)
    names = storage.listdir(state, so, retry=cfg.retry)
    for name in names:
        if ours(name) and not (keep_lock and name in (LOCK, "lock.json")):
            storage.remove(storage.join(state, name), so)
    if storage.is_local(out):
        with contextlib.suppress(OSError):
            os.rmdir(state.removeprefix("file://"))  # only when empty: a user's files keep it


def kept_result(cfg: ConvertConfig, digest: str, index: int, listing: set[str]) -> ShardResult | None:
    """The recorded result of shard ``index`` when an earlier run of the same plan finished it (its record,
    shard and ``.idx`` present, the shard at its recorded size); None when it must be written."""
    so = cfg.storage_options
    record = read_json(state_url(cfg, f"shard-{index:06d}.json"), so, cfg.retry)
    name = manifest.shard_name(cfg.name, index)
    if record is None or record.get("plan_digest") != digest or name not in listing:
        return None
    if manifest.idx_name(cfg.name, index) not in listing:
        return None
    result = ShardResult(**record["result"])
    if storage.file_size(storage.join(str(cfg.output), name), so, retry=cfg.retry) != result.filesize:
        return None
    return result


def record_shard(cfg: ConvertConfig, digest: str, result: ShardResult) -> None:
    """The resume record of a finished shard (written after the shard and its ``.idx`` are in place)."""
    storage.write_bytes(
        state_url(cfg, f"shard-{result.index:06d}.json"),
        json.dumps({"plan_digest": digest, "result": result.to_json()}, ensure_ascii=False).encode(),
        cfg.storage_options,
    )


def remove_state(cfg: ConvertConfig) -> None:
    """The output is finished (its manifest written): its resume records go, and only they."""
    _remove_state_files(cfg)


def remove_leftovers(cfg: ConvertConfig, foreign: set[str] | frozenset[str]) -> None:
    """Temp files of a worker killed mid-shard (its retry wrote the shard). Only temp files of names this output
    lists are ours, never one that was there, foreign, before the run."""
    out, so = str(cfg.output), cfg.storage_options
    storage.remove_temp_files(
        out, so, names=owned_entries(cfg) - {STATE, _PROBE}, keep=foreign, retry=cfg.retry
    )
