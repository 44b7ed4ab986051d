"""Everything make-shards knows before the first shard is written: the cheap checks, the listing (as executor
tasks, while the allowlist is read), the join, the plan and its digest."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pass_wds import storage
from pass_wds.convert import executors, planning
from pass_wds.convert.inputs import InputSpec, Listing, expand_inputs, list_input, merge_listings
from pass_wds.convert.metadata import Metadata, attribution_columns, read_metadata
from pass_wds.convert.options import ConvertConfig, output_options
from pass_wds.convert.output import check_output_writable
from pass_wds.errors import ConfigError, InputError
from pass_wds.format import reasons
from pass_wds.format.reasons import Rejection
from pass_wds.format.samples import estimate_json_sizes
from pass_wds.storage.log import get_logger

log = get_logger("pass_wds.make_shards")


@dataclass
class Prepared:
    """Everything known before the first shard is written."""

    inputs: list[InputSpec]
    items: Listing  # the items planned (columns)
    rows: np.ndarray  # row number in ``metadata`` per item, -1 for none
    metadata: Metadata | None
    rejections: list[Rejection]
    unmatched_metadata: list[str]
    metadata_rows: int
    plan: planning.ShardPlan
    digest: str
    attribution_columns: tuple[str, ...]


def check_options(cfg: ConvertConfig) -> None:
    """The checks that read nothing, before any engine starts: every option's value, the engine options, an
    allowlist given."""
    cfg.validate_values()
    executors.check(cfg)
    if cfg.metadata is None and not cfg.allow_missing_metadata:
        raise ConfigError(
            "--metadata is required (it is the allowlist); pass --allow-missing-metadata to shard images without one"
        )


def check_inputs(cfg: ConvertConfig) -> list[InputSpec]:
    """The inputs exist (exists/stat only: nothing is read yet): the allowlist, then every input expanded."""
    so = cfg.storage_options
    if cfg.metadata and not storage.exists(cfg.metadata, so, retry=cfg.retry):
        raise InputError(f"metadata not found: {storage.redact(cfg.metadata)}")
    return expand_inputs(cfg.inputs, so, retry=cfg.retry)


def prepare(
    cfg: ConvertConfig,
    executor: executors.Executor | None = None,
    inputs: list[InputSpec] | None = None,
) -> Prepared:
    """List every archive and folder (as tasks of ``executor``: on a cluster, where the bytes are), read the
    allowlist meanwhile, then join and plan the shards here (the plan is small). Without ``inputs`` (a dry
    run), the checks come first."""
    so = cfg.storage_options
    if inputs is None:
        check_options(cfg)
        check_output_writable(str(cfg.output), so, cfg.retry)
        inputs = check_inputs(cfg)
    t0 = time.monotonic()
    jobs = [(spec, i, so, cfg.retry) for i, spec in enumerate(inputs)]
    own = executor is None
    ex = executors.LocalExecutor(1) if executor is None else executor
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pass-wds-metadata") as reader:
            md_future = (
                reader.submit(read_metadata, cfg.metadata, cfg.key_column, so, retry=cfg.retry)
                if cfg.metadata
                else None
            )
            listings: list[Listing | None] = [None] * len(inputs)
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
    merged = merge_listings(inputs, [x for x in listings if x is not None])
    log.info("listed %d files in %d inputs in %.1fs", len(merged), len(inputs), time.monotonic() - t0)
    return build_plan(cfg, merged, md)


def build_plan(cfg: ConvertConfig, merged: Listing, md: Metadata | None) -> Prepared:
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
                    key,
                    inputs[merged.input_index[i]].name,
                    member,
                    reasons.MISSING_METADATA,
                    "no metadata row",
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
        name_len[items.input_index],
        items.members,
        items.sizes,
        np.where(rows >= 0, body_sizes, -1) if body_sizes is not None else None,
    )
    sizes = planning.samples_bytes(items.sizes, json_sizes)
    del json_sizes, body_sizes
    plan = planning.plan_shards(
        items.keys, sizes, target_bytes=cfg.shard_bytes, seed=cfg.seed, max_count=cfg.max_count
    )
    attr = attribution_columns(
        md.columns if md is not None else [], key_column=cfg.key_column, creator_column=cfg.creator_column
    )
    digest = plan_digest(cfg, inputs, items, rows, md, plan, attr)
    return Prepared(inputs, items, rows, md, rejections, unmatched, len(md) if md else 0, plan, digest, attr)


def _json_literal(text: str) -> bytes:
    return json.encoder.encode_basestring(text).encode("utf-8")  # type: ignore[attr-defined,no-any-return]


def _list_one(job: tuple[InputSpec, int, dict[str, Any], storage.RetryPolicy]) -> tuple[int, Listing]:
    """A listing task (runs on a worker): the input's index and its listing."""
    spec, index, so, retry = job
    return index, list_input(spec, index, so, retry=retry)


def plan_digest(
    cfg: ConvertConfig,
    inputs: list[InputSpec],
    items: Listing,
    rows: np.ndarray,
    md: Metadata | None,
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
                names.take(pa.array(items.input_index[idx])),
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
