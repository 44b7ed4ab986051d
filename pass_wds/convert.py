"""make-shards orchestration: check arguments, list, join, plan, run shard tasks, write the manifest last.

Resume works from the plan digest: ``_state/plan.json`` records it when a run starts and
``_state/shard-NNNNNN.json`` records each finished shard. A rerun with the same digest keeps shards whose
record and size match and writes the rest; a different digest is refused unless ``--overwrite``. When the
manifest is written the state folder is removed, so a finished output holds only its final files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pass_wds import __version__, executors, planning, sources, storage
from pass_wds.config import ConfigError, ConvertConfig, to_dict
from pass_wds.format import croissant, manifest, reasons
from pass_wds.format.reasons import Rejection
from pass_wds.format.samples import estimate_json_sizes
from pass_wds.storage.errors import get_logger
from pass_wds.writing import (
    ShardResult,
    ShardTask,
    TaskItem,
    WriteOptions,
    write_shard,
)

log = get_logger("pass_wds.make_shards")

STATE = "_state"
CREATOR_COLUMNS = ("unickname", "creator", "author", "artist", "photographer", "owner", "username", "user")
_ATTRIBUTION_HINTS = ("licen", "url", "link", "credit", "copyright", "owner", "source")
# Options that change the bytes of the output; anything else (workers, progress, …) may differ on resume.
_OUTPUT_OPTIONS = (
    "name",
    "key_column",
    "shard_size",
    "max_count",
    "seed",
    "validate",
    "allow_missing_metadata",
    "resize_max_side",
    "quality",
    "max_image_pixels",
    "creator_column",
)


_ENGINE_OPTIONS = ("scheduler", "cluster")


@dataclass
class Prepared:
    """Everything known before the first shard is written."""

    inputs: list[sources.InputSpec]
    items: sources.Listing  # the items planned (columns)
    rows: np.ndarray  # row number in ``metadata`` per item, -1 for none
    metadata: sources.Metadata | None
    rejections: list[Rejection]
    unmatched_metadata: list[str]
    metadata_rows: int
    plan: planning.ShardPlan
    digest: str
    attribution_columns: tuple[str, ...]


@dataclass
class Summary:
    output: str
    shards: int = 0
    shards_resumed: int = 0
    samples: int = 0
    output_bytes: int = 0
    input_bytes: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    metadata_without_image: int = 0
    seconds: float = 0.0
    partial: tuple[int, int] | None = None
    resumed_samples: int = 0  # samples in the shards kept from earlier runs (not written by this run)
    resumed_bytes: int = 0

    @classmethod
    def of(cls, output: str, results: list[ShardResult], started: float, **kw: Any) -> Summary:
        """Totals of the shards written (or kept) by this run."""
        return cls(
            output,
            shards=len(results),
            samples=sum(r.nsamples for r in results),
            output_bytes=sum(r.filesize for r in results),
            input_bytes=sum(r.input_bytes for r in results),
            seconds=time.monotonic() - started,
            **kw,
        )

    def lines(self) -> list[str]:
        if self.partial is not None:
            a, b = self.partial
            return [
                f"shards {a}..{b - 1}: {self.shards} complete ({self.shards_resumed} from earlier runs), "
                f"{self.samples:,} samples, {self.output_bytes / 1e6:,.1f} MB in {self.seconds:.1f}s; "
                "run without --shard-range once every range is done to write the manifest"
            ]
        if self.shards and self.shards_resumed == self.shards and not self.seconds:
            return [
                f"{storage.redact(self.output)} is already complete for these inputs and options: "
                f"{self.samples:,} samples in {self.shards} shards; nothing to do"
            ]
        # Rates count only what this run wrote: kept shards cost it nothing, so counting them would flatter it.
        written = self.samples - self.resumed_samples
        written_bytes = self.output_bytes - self.resumed_bytes
        rate = written / self.seconds if self.seconds else 0.0
        mbps = written_bytes / 1e6 / self.seconds if self.seconds else 0.0
        out = [
            f"wrote {self.samples:,} samples in {self.shards} shards ({self.output_bytes / 1e6:,.1f} MB) "
            f"to {storage.redact(self.output)} in {self.seconds:.1f}s ({rate:,.0f} img/s, {mbps:,.1f} MB/s, "
            "listing included)",
        ]
        if self.shards_resumed:
            out[0] = (
                f"wrote {written:,} samples in {self.shards - self.shards_resumed} shards "
                f"({written_bytes / 1e6:,.1f} MB) to {storage.redact(self.output)} in {self.seconds:.1f}s "
                f"({rate:,.0f} img/s, {mbps:,.1f} MB/s, listing included)"
            )
            out.append(
                f"kept {self.shards_resumed} shards ({self.resumed_samples:,} samples, "
                f"{self.resumed_bytes / 1e6:,.1f} MB) completed by an earlier run: "
                f"{self.samples:,} samples in {self.shards} shards in all"
            )
        total = sum(self.rejected.values())
        detail = ", ".join(f"{r} {n}" for r, n in sorted(self.rejected.items()))
        out.append(f"rejected {total} inputs" + (f" ({detail}); see errors.jsonl" if total else ""))
        if self.metadata_without_image:
            out.append(
                f"{self.metadata_without_image} metadata rows have no image (see {manifest.UNMATCHED})"
            )
        return out


# ---------------------------------------------------------------------------------------------- checks


def check_output_writable(output: str, storage_options: dict[str, Any] | None = None) -> None:
    """Fail before any real work when the output cannot be written: a local folder is checked without writing;
    an object store gets a tiny probe object (endpoint, bucket and permission), removed at once."""
    if not storage.is_local(output):
        storage.check_writable(output, storage_options)
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


LOCK = "lock"  # _state/lock: flock'ed by every run into a local output


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
        self.shared = shared
        self._fd: int | None = None
        self._created: list[str] = []
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
        held = _read_json(self._remote, self.so)
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
                held = _read_json(self._remote, self.so)
                if held is not None and held.get("token") == self._token:
                    storage.remove(self._remote, self.so)
            self._remote = None
        if self._fd is None:
            return
        if not self._kept and self._created:
            with contextlib.suppress(OSError):
                os.remove(self._path)
            for d in reversed(self._created):
                with contextlib.suppress(OSError):
                    os.rmdir(d)  # only when empty
        os.close(self._fd)
        self._fd = None

    def __exit__(self, *exc: object) -> None:
        self._release()


def _creator_column(cfg: ConvertConfig, columns: list[str]) -> str | None:
    if cfg.creator_column:
        if columns and cfg.creator_column not in columns:
            raise ConfigError(f"creator column {cfg.creator_column!r} not found in metadata")
        return cfg.creator_column
    lower = {c.lower(): c for c in columns}
    return next((lower[c] for c in CREATOR_COLUMNS if c in lower), None)


def attribution_columns(cfg: ConvertConfig, columns: list[str]) -> tuple[str, ...]:
    """Creator first, then every licence / URL-like column present (CC-BY asks for both)."""
    creator = _creator_column(cfg, columns)
    rest = [
        c
        for c in columns
        if c != creator and c != cfg.key_column and any(h in c.lower() for h in _ATTRIBUTION_HINTS)
    ]
    return tuple(([creator] if creator else []) + rest)


# --------------------------------------------------------------------------------------------- prepare


def check_inputs(cfg: ConvertConfig) -> list[sources.InputSpec]:
    """The cheap checks, before any engine starts: options, inputs exist, metadata given, output writable."""
    cfg.validate_values()
    executors.check(cfg)
    so = cfg.storage_options
    if cfg.metadata is None and not cfg.allow_missing_metadata:
        raise ConfigError(
            "--metadata is required (it is the allowlist); pass --allow-missing-metadata to shard images without one"
        )
    if cfg.metadata and not storage.exists(cfg.metadata, so):
        raise ConfigError(f"metadata not found: {storage.redact(cfg.metadata)}")
    check_output_writable(str(cfg.output), so)
    inputs = sources.expand_inputs(cfg.inputs, so)  # exists/stat only: nothing is read yet
    return inputs


def prepare(
    cfg: ConvertConfig,
    executor: executors.Executor | None = None,
    inputs: list[sources.InputSpec] | None = None,
) -> Prepared:
    """List every archive and folder (as tasks of ``executor``: on a cluster, where the bytes are), read the
    allowlist meanwhile, then join and plan the shards here (the plan is small)."""
    if inputs is None:
        inputs = check_inputs(cfg)
    so = cfg.storage_options
    t0 = time.monotonic()
    jobs = [(spec, i, so) for i, spec in enumerate(inputs)]
    own = executor is None
    ex = executors.LocalExecutor(1) if executor is None else executor
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pass-wds-metadata") as reader:
            md_future = (
                reader.submit(sources.read_metadata, cfg.metadata, cfg.key_column, so)
                if cfg.metadata
                else None
            )
            listings: list[sources.Listing | None] = [None] * len(inputs)
            lines: list[tuple[str, int, int]] = []  # held while the metadata may still fail: one error line
            for i, listing in ex.imap_unordered(_list_one, jobs, io=True):
                listings[i] = listing
                lines.append((inputs[i].name, len(listing), len(listing.rejections)))
                if md_future is None or md_future.done() and md_future.exception() is None:
                    for line in lines:  # one line per archive: listing PASS takes a while
                        log.info("listed %s: %d files, %d refused", *line)
                    lines = []
            md = md_future.result() if md_future is not None else None
            for line in lines:
                log.info("listed %s: %d files, %d refused", *line)
    finally:
        if own:
            ex.close()
    if md is not None:
        log.info("read %d metadata rows (%d columns)", len(md), len(md.columns))
    merged = sources.merge_listings(inputs, [x for x in listings if x is not None])
    log.info("listed %d files in %d inputs in %.1fs", len(merged), len(inputs), time.monotonic() - t0)
    return build_plan(cfg, merged, md)


def build_plan(cfg: ConvertConfig, merged: sources.Listing, md: sources.Metadata | None) -> Prepared:
    """Join a listing with the allowlist and plan the shards (no I/O; the scale benchmark calls this).

    Column at a time: one hash join for the rows, Arrow string lengths for the JSON size estimate, an Arrow
    sort for the key order; only rejected items become Python objects.
    """
    inputs = merged.inputs
    rejections = list(merged.rejections)
    if md is not None:
        rows = md.rows_of(merged.keys)
        matched = np.zeros(len(md), dtype=bool)
        matched[rows[rows >= 0]] = True
        rejected_keys = [r.key for r in merged.rejections]
        if rejected_keys:
            hit = md.rows_of(pa.array(rejected_keys, pa.string()))
            matched[hit[hit >= 0]] = True
    else:
        rows = np.full(len(merged), -1, dtype=np.int64)
        matched = np.zeros(0, dtype=bool)
    if cfg.allow_missing_metadata:
        items = merged
    else:
        missing = np.flatnonzero(rows < 0)
        keys, members = merged.keys.take(missing).to_pylist(), merged.members.take(missing).to_pylist()
        for key, member, i in zip(keys, members, missing.tolist(), strict=True):
            rejections.append(
                Rejection(
                    key, inputs[merged.source[i]].name, member, reasons.MISSING_METADATA, "no metadata row"
                )
            )
        keep = np.flatnonzero(rows >= 0)
        items = merged.take(keep) if len(missing) else merged
        rows = rows[keep]
    unmatched: list[str] = []
    if md is not None and not matched.all():
        unmatched = sorted(md.keys_array.filter(pa.array(~matched)).to_pylist())

    name_len = np.array([len(_json_literal(spec.name)) for spec in inputs] or [0], dtype=np.int64)
    body_sizes = md.body_sizes()[rows] if md is not None and len(md) else None
    json_sizes = estimate_json_sizes(
        items.keys,
        name_len[items.source],
        items.members,
        items.sizes,
        np.where(rows >= 0, body_sizes, -1) if body_sizes is not None else None,
    )
    sizes = planning.samples_bytes(items.sizes, json_sizes)
    del json_sizes, body_sizes
    plan = planning.plan_shards(
        items.keys, sizes, target_bytes=cfg.shard_bytes, seed=cfg.seed, max_count=cfg.max_count
    )
    attr = attribution_columns(cfg, md.columns if md is not None else [])
    digest = plan_digest(cfg, inputs, items, rows, md, plan, attr)
    return Prepared(inputs, items, rows, md, rejections, unmatched, len(md) if md else 0, plan, digest, attr)


def _json_literal(text: str) -> bytes:
    return json.encoder.encode_basestring(text).encode("utf-8")  # type: ignore[attr-defined,no-any-return]


def _list_one(job: tuple[sources.InputSpec, int, dict[str, Any]]) -> tuple[int, sources.Listing]:
    """A listing task (runs on a worker): the input's index and its listing."""
    spec, index, so = job
    return index, sources.list_input(spec, index, so)


def _task_items(prep: Prepared, idx: np.ndarray) -> list[TaskItem]:
    """What a shard writer needs for the items ``idx`` (built per shard, when its task is sent)."""
    items, inputs = prep.items, prep.inputs
    keys, members = items.keys.take(idx).to_pylist(), items.members.take(idx).to_pylist()
    source = items.source[idx].tolist()
    rows = prep.metadata.bodies(prep.rows[idx].tolist()) if prep.metadata is not None else [None] * len(idx)
    urls = sources.item_urls(inputs, source, members)
    return [
        TaskItem(
            key=k,
            url=u,
            source=inputs[s].name,
            member=m,
            offset=o,
            size=z,
            from_tar=inputs[s].kind == "tar",
            row=r,
        )
        for k, u, s, m, o, z, r in zip(
            keys,
            urls,
            source,
            members,
            items.offsets[idx].tolist(),
            items.sizes[idx].tolist(),
            rows,
            strict=True,
        )
    ]


def output_options(cfg: ConvertConfig) -> dict[str, Any]:
    d = to_dict(cfg)
    return {k: d[k] for k in _OUTPUT_OPTIONS} | {"shard_bytes": cfg.shard_bytes}


def plan_digest(
    cfg: ConvertConfig,
    inputs: list[sources.InputSpec],
    items: sources.Listing,
    rows: np.ndarray,
    md: sources.Metadata | None,
    plan: planning.ShardPlan,
    attr: tuple[str, ...],
) -> str:
    """Identifies the output a plan will produce: format version, output options, and every planned item.

    Each shard contributes its items' ``key, input, member, offset, size, row`` lines; they are joined by
    Arrow a quarter million items at a time, and each shard's text is a slice of that buffer.
    """
    names = pa.array([spec.name for spec in inputs], pa.string())
    order, bounds = plan.shards.order, plan.shards.bounds

    def shard_texts() -> Iterator[bytes]:
        s = 0
        while s < len(plan.shards):
            e = s + 1  # shards [s, e) of up to _DIGEST_BATCH items together (or one larger shard)
            while e < len(plan.shards) and bounds[e + 1] - bounds[s] <= _DIGEST_BATCH:
                e += 1
            idx = order[bounds[s] : bounds[e]]
            cols = [
                items.keys.take(idx),
                names.take(pa.array(items.source[idx])),
                items.members.take(idx),
                *(pc.cast(pa.array(col[idx]), pa.string()) for col in (items.offsets, items.sizes, rows)),
            ]
            tab, newline = pa.scalar("\t", pa.large_string()), pa.scalar("\n", pa.large_string())
            lines = pc.binary_join_element_wise(*(c.cast(pa.large_string()) for c in cols), tab)
            lines = pc.binary_join_element_wise(
                lines, pa.scalar("", pa.large_string()), newline
            )  # ends in \n
            offs = np.frombuffer(lines.buffers()[1], np.int64)[lines.offset : lines.offset + len(lines) + 1]
            data = memoryview(lines.buffers()[2])
            for k in range(s, e):
                a, b = offs[bounds[k] - bounds[s]], offs[bounds[k + 1] - bounds[s]]
                yield bytes(data[a : b - 1]) if b > a else b""  # without the last newline
            s = e

    def parts() -> Iterator[str | bytes]:
        yield "pass-wds-shards-v2"  # v2: sample JSON carries _provenance.crc32 (a v1 output is not resumed)
        yield json.dumps(output_options(cfg), sort_keys=True)
        yield json.dumps(attr)
        yield md.digest() if md is not None else ""
        yield from shard_texts()

    return planning.digest(parts())


_DIGEST_BATCH = 1 << 18


# ------------------------------------------------------------------------------------------------- run


def run(cfg: ConvertConfig, *, progress: Callable[..., Any] | None = None) -> Summary:
    """Convert inputs to shards as configured; returns a summary. Raises ConfigError for bad arguments."""
    started = time.monotonic()
    storage.remember_secrets(cfg.storage_options)
    # every check that needs no listing comes first (listing PASS reads 187 GB); the output before the inputs
    cfg.validate_values()
    check_output_writable(str(cfg.output), cfg.storage_options)
    foreign = check_output_owned(cfg)
    inputs = check_inputs(cfg)
    bounds = cfg.shard_bounds()
    with OutputLock(cfg, shared=bounds is not None) as lock, executors.create(cfg) as ex:
        prep = prepare(cfg, ex, inputs)
        finished = _already_complete(cfg, prep)
        if finished is not None:
            return finished
        if bounds is not None and bounds[1] > len(prep.plan.shards):
            raise ConfigError(
                f"--shard-range {cfg.shard_range} is outside the plan's {len(prep.plan.shards)} shards"
            )
        _claim_output(cfg, prep, foreign, partial=bounds is not None)
        lock.keep()
        results, kept = _write_all(cfg, prep, ex, progress, bounds)
        resumed = {
            "shards_resumed": len(kept),
            "resumed_samples": sum(r.nsamples for r in kept),
            "resumed_bytes": sum(r.filesize for r in kept),
        }
        if bounds is not None:  # one task of many: the run without --shard-range writes the manifest
            return Summary.of(str(cfg.output), results, started, partial=bounds, **resumed)
        summary = _finish(cfg, prep, results, started, foreign)
    for k, v in resumed.items():
        setattr(summary, k, v)
    return summary


def dry_run(cfg: ConvertConfig) -> list[str]:
    """List, join and plan exactly as :func:`run` would, and describe the result; nothing is written."""
    prep = prepare(cfg)
    plan = prep.plan
    sp = plan.spread()
    rejected = Counter(r.reason for r in prep.rejections)
    detail = ", ".join(f"{r} {n}" for r, n in sorted(rejected.items()))
    listed = len(prep.items) + len(prep.rejections)
    image_bytes = int(prep.items.sizes.sum())
    out = [
        f"dry run: {len(prep.inputs)} inputs, {listed:,} files listed, {len(prep.items):,} samples to write "
        f"({image_bytes / 1e6:,.1f} MB of images)",
        f"plan: {len(plan.shards)} shards of {sp['mean'] / 1e6:,.1f} MB on average "
        f"(min {sp['min'] / 1e6:,.1f}, max {sp['max'] / 1e6:,.1f} MB; target {cfg.shard_size}), "
        f"{plan.num_samples / max(1, len(plan.shards)):,.0f} samples per shard, {plan.num_samples:,} in all",
        f"rejected {sum(rejected.values())} inputs"
        + (f" ({detail})" if detail else "")
        + " (images that fail to decode are found only while writing)",
    ]
    if prep.unmatched_metadata:
        out.append(f"{len(prep.unmatched_metadata):,} metadata rows have no image")
    out.append(f"nothing written to {storage.redact(str(cfg.output))}")
    return out


def _already_complete(cfg: ConvertConfig, prep: Prepared) -> Summary | None:
    """A finished output of the same plan (every shard present at its manifest size) needs no work."""
    out, so = str(cfg.output), cfg.storage_options
    index = _read_json(storage.join(out, manifest.INDEX), so)
    if index is None or index.get("plan_digest") != prep.digest:
        return None
    sizes = {}
    try:
        for entry in index["shardlist"]:
            sizes[entry["url"]] = storage.file_size(storage.join(out, entry["url"]), so)
    except FileNotFoundError:
        return None
    if any(sizes[e["url"]] != e["filesize"] for e in index["shardlist"]):
        return None
    stats = _read_json(storage.join(out, manifest.STATS), so) or {}
    summary = Summary(out, shards=len(sizes), shards_resumed=len(sizes))
    summary.samples = index["totals"]["samples"]
    summary.output_bytes = index["totals"]["bytes"]
    summary.rejected = Counter(stats.get("rejected", {}))
    summary.metadata_without_image = int(stats.get("metadata_without_image", 0))
    return summary


def _state_url(cfg: ConvertConfig, name: str) -> str:
    return storage.join(str(cfg.output), STATE, name)


def _read_json(url: str, so: dict[str, Any]) -> dict[str, Any] | None:
    try:
        data = json.loads(storage.read_bytes(url, so))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


_PROBE = ".pass-wds-probe"  # storage.check_writable's probe object


def owned_entries(cfg: ConvertConfig) -> set[str]:
    """Names directly in the output that an earlier pass-wds run wrote there, as that output itself lists them:
    the shards and indexes of its manifest and of its ``_state/plan.json``, and the side files next to them.

    Never a name pattern: a ``pass-backup.tar`` or someone's ``*.tmp-*`` file is not ours because of its name.
    """
    out, so = str(cfg.output), cfg.storage_options
    owned = {STATE, _PROBE} | manifest.listed_names(_read_json(storage.join(out, manifest.INDEX), so))
    plan = _read_json(_state_url(cfg, "plan.json"), so)
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
    entries = storage.listdir(out, so)
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


def _claim_output(cfg: ConvertConfig, prep: Prepared, foreign: set[str], *, partial: bool = False) -> None:
    """Refuse to mix two different plans in one output (unless --overwrite); record ours.

    A partial run (``--shard-range``) may share the output with other tasks running at the same time, so it
    leaves temporary files alone: the final run, alone, removes leftovers (of its own files only).
    """
    out, so = str(cfg.output), cfg.storage_options
    planned = {
        f(cfg.name, i) for i in range(len(prep.plan.shards)) for f in (manifest.shard_name, manifest.idx_name)
    }
    _refuse_collisions(cfg, foreign, planned)
    previous = _read_json(_state_url(cfg, "plan.json"), so) or _read_json(
        storage.join(out, manifest.INDEX), so
    )
    if previous is not None and previous.get("plan_digest") != prep.digest:
        if not cfg.overwrite:
            raise ConfigError(
                f"output {storage.redact(out)} holds a different conversion (other inputs or options); "
                "use a new --output, or --overwrite to replace it"
            )
        _clear_output(cfg, keep=foreign)
    storage.makedirs(out, so)
    if not partial:
        # temp files of names the output itself lists (a crashed run's leftovers); a temp file named for one of
        # our names in a folder that never held our output is someone else's
        storage.remove_temp_files(out, so, names=owned_entries(cfg) - {STATE}, keep=foreign)
    storage.write_bytes(
        _state_url(cfg, "plan.json"),
        manifest.dumps({"plan_digest": prep.digest, "name": cfg.name, "shards": len(prep.plan.shards)}),
        so,
    )


def _clear_output(cfg: ConvertConfig, keep: set[str] | frozenset[str] = frozenset()) -> None:
    """``--overwrite``: remove what the earlier output itself lists (manifest, state), nothing else."""
    out, so = str(cfg.output), cfg.storage_options
    owned = owned_entries(cfg) - {STATE, _PROBE}
    for name in storage.listdir(out, so):
        if name not in keep and (name in owned or storage.temp_of(name) in owned):
            storage.remove(storage.join(out, name), so)
    state = storage.join(out, STATE)
    for name in storage.listdir(state, so):
        if name not in (LOCK, "lock.json"):  # the lock is held by this run
            storage.remove(storage.join(state, name), so, recursive=True)


def _done_result(cfg: ConvertConfig, prep: Prepared, index: int, listing: set[str]) -> ShardResult | None:
    so = cfg.storage_options
    record = _read_json(_state_url(cfg, f"shard-{index:06d}.json"), so)
    name = manifest.shard_name(cfg.name, index)
    if record is None or record.get("plan_digest") != prep.digest or name not in listing:
        return None
    if manifest.idx_name(cfg.name, index) not in listing:
        return None
    result = ShardResult(**record["result"])
    if storage.file_size(storage.join(str(cfg.output), name), so) != result.filesize:
        return None
    return result


def _tasks(cfg: ConvertConfig, prep: Prepared, todo: list[int]) -> Iterator[ShardTask]:
    opts = WriteOptions(
        validate=cfg.validate,
        resize_max_side=cfg.resize_max_side,
        quality=(cfg.quality or 95) if cfg.reencode else None,
        max_image_pixels=cfg.max_image_pixels,
        attribution_columns=prep.attribution_columns,
        storage_options=cfg.storage_options,
    )
    out = str(cfg.output)
    for s in todo:
        yield ShardTask(
            index=s,
            url=storage.join(out, manifest.shard_name(cfg.name, s)),
            idx_url=storage.join(out, manifest.idx_name(cfg.name, s)),
            items=_task_items(prep, prep.plan.shards.array(s)),
            options=opts,
        )


def _write_all(
    cfg: ConvertConfig,
    prep: Prepared,
    executor: executors.Executor,
    progress: Callable[..., Any] | None,
    bounds: tuple[int, int] | None = None,
) -> tuple[list[ShardResult], list[ShardResult]]:
    """Write the shards not yet done; returns all results and those kept from earlier runs."""
    so = cfg.storage_options
    listing = set(storage.listdir(str(cfg.output), so))
    wanted = range(*bounds) if bounds is not None else range(len(prep.plan.shards))
    results: dict[int, ShardResult] = {}
    for s in wanted:
        done = _done_result(cfg, prep, s, listing)
        if done is not None:
            results[s] = done
    kept = list(results.values())
    todo = [s for s in wanted if s not in results]
    bar = _Progress(
        prep, cfg, wanted, already={s: len(prep.plan.shards[s]) for s in results}, callback=progress
    )

    def record(result: ShardResult) -> None:
        storage.write_bytes(
            _state_url(cfg, f"shard-{result.index:06d}.json"),
            json.dumps({"plan_digest": prep.digest, "result": result.to_json()}, ensure_ascii=False).encode(),
            so,
        )
        results[result.index] = result
        bar.shard_done(result, len(prep.plan.shards[result.index]))

    try:
        for result in executor.imap_unordered(write_shard, _tasks(cfg, prep, todo)):
            record(result)
    finally:
        bar.close()
    return [results[s] for s in sorted(results)], kept


def _finish(
    cfg: ConvertConfig,
    prep: Prepared,
    results: list[ShardResult],
    started: float,
    foreign: set[str] | frozenset[str] = frozenset(),
) -> Summary:
    out, so = str(cfg.output), cfg.storage_options
    # a worker killed mid-shard leaves its temp file; its retry wrote the shard. Only temp files of names this
    # output lists are ours (never one that was there, foreign, before the run)
    storage.remove_temp_files(out, so, names=owned_entries(cfg) - {STATE, _PROBE}, keep=foreign)
    shard_rejections = [r for res in results for r in res.rejections]
    errors = [r.to_json() for r in prep.rejections] + shard_rejections
    storage.write_bytes(storage.join(out, manifest.ERRORS), manifest.jsonl(errors), so)
    storage.write_bytes(
        storage.join(out, manifest.ATTRIBUTION),
        manifest.attribution_csv(
            list(prep.attribution_columns), (row for res in results for row in res.attribution)
        ),
        so,
    )
    storage.write_bytes(
        storage.join(out, manifest.UNMATCHED), "".join(k + "\n" for k in prep.unmatched_metadata).encode(), so
    )
    summary = Summary.of(
        out,
        results,
        started,
        rejected=Counter(e["reason"] for e in errors),
        metadata_without_image=len(prep.unmatched_metadata),
    )

    sizes = [r.filesize for r in results]
    stats = {
        "samples_written": summary.samples,
        "shards": summary.shards,
        "inputs_listed": len(prep.items) + len(prep.rejections),
        "rejected": dict(sorted(summary.rejected.items())),
        "rejected_total": sum(summary.rejected.values()),
        "metadata_rows": prep.metadata_rows,
        "metadata_without_image": summary.metadata_without_image,
        "bytes": {"input_images": summary.input_bytes, "output": summary.output_bytes},
        "shard_bytes": {**manifest.size_spread(sizes), "target": cfg.shard_bytes},
        "shard_samples": {
            "min": min((r.nsamples for r in results), default=0),
            "max": max((r.nsamples for r in results), default=0),
        },
        "seconds": summary.seconds,
        "images_per_second": summary.samples / summary.seconds if summary.seconds else 0.0,
        "workers": cfg.workers,
    }
    storage.write_bytes(storage.join(out, manifest.STATS), manifest.dumps(stats), so)
    config = to_dict(cfg)
    for private in ("storage_options", "overwrite", "progress", "output", "workers", "shard_range"):
        config.pop(private, None)
    for engine in [k for k in config if k in _ENGINE_OPTIONS or k.startswith("slurm_")]:
        config.pop(
            engine
        )  # where it ran is not part of what was made: a Dask run's index.json is a local one's
    config["inputs"] = [storage.redact(i) for i in cfg.inputs]
    config["metadata"] = storage.redact(cfg.metadata) if cfg.metadata else None
    index = manifest.build_index(
        cfg.name, results, seed=cfg.seed, config=config, plan_digest=prep.digest, version=__version__
    )
    storage.write_bytes(storage.join(out, manifest.CROISSANT), _croissant(cfg, prep, results, index), so)
    storage.write_bytes(
        storage.join(out, manifest.INDEX), manifest.dumps(index), so
    )  # last: marks completion
    storage.remove(storage.join(out, STATE), so, recursive=True)
    return summary


def _croissant(
    cfg: ConvertConfig, prep: Prepared, results: list[ShardResult], index: dict[str, Any]
) -> bytes:
    """croissant.json: column types from up to 10,000 metadata rows, image formats from the shards."""
    md = prep.metadata
    columns = md.columns if md is not None else []
    rows = (
        (json.loads("{" + md.body(r) + "}") for r in islice((r for r in prep.rows if r >= 0), 10_000))
        if md is not None
        else iter(())
    )
    doc = croissant.build(
        cfg.name,
        index["shardlist"],
        columns=croissant.column_types(columns, rows),
        image_exts={e for r in results for e in r.image_exts} or {"jpg"},
        version=__version__,
    )
    return croissant.dumps(doc)


# -------------------------------------------------------------------------------------------- progress


class _Progress:
    """A tqdm bar on a terminal (samples/s, MB/s, ETA); periodic plain log lines otherwise."""

    def __init__(
        self,
        prep: Prepared,
        cfg: ConvertConfig,
        wanted: range,
        already: dict[int, int],
        callback: Callable[..., Any] | None,
    ):
        self.total = sum(len(prep.plan.shards[s]) for s in wanted)
        self.shards = len(wanted)
        self.done_samples = sum(already.values())
        self.done_shards = len(already)
        self.kept_samples = self.done_samples  # the bar and the log lines rate only what this run writes
        self.bytes = 0
        self.t0 = time.monotonic()
        self.last_log = self.t0
        self.callback = callback
        show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.done_samples,
                unit="img",
                unit_scale=True,
                desc="make-shards",
                dynamic_ncols=True,
                smoothing=0,  # the average rate of this run, as the log lines and the summary give it
            )

    def shard_done(self, result: ShardResult, planned: int) -> None:
        self.done_samples += planned
        self.done_shards += 1
        self.bytes += result.filesize
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(planned)
            self.bar.set_postfix(
                shards=f"{self.done_shards}/{self.shards}", MBps=f"{self.bytes / 1e6 / elapsed:.1f}"
            )
        elif time.monotonic() - self.last_log >= 10 or self.done_shards == self.shards:
            self.last_log = time.monotonic()
            rate = (self.done_samples - self.kept_samples) / elapsed
            eta = (self.total - self.done_samples) / rate if rate else 0.0
            log.info(
                "%d/%d shards, %d/%d images, %.0f img/s, %.1f MB/s over %.1fs, ETA %.0fs",
                self.done_shards,
                self.shards,
                self.done_samples,
                self.total,
                rate,
                self.bytes / 1e6 / elapsed,
                elapsed,
                eta,
            )
        if self.callback is not None:
            self.callback(self.done_shards, self.shards)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
