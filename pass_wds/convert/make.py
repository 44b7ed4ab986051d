"""``make_shards``: check, list, join, plan, write the shards as executor tasks, finish (manifest last).

Every check that needs no listing comes first (listing PASS reads 187 GB): the options, then the output
(writable, holding nothing foreign), then the inputs. A rerun of the same plan resumes (see :mod:`.output`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pass_wds import storage
from pass_wds.config import ConfigError, from_dict, to_dict
from pass_wds.convert import executors
from pass_wds.convert.finish import finish
from pass_wds.convert.inputs import item_urls
from pass_wds.convert.options import ConvertConfig
from pass_wds.convert.output import (
    OutputLock,
    check_output_owned,
    check_output_writable,
    claim_output,
    kept_result,
    read_json,
    record_shard,
)
from pass_wds.convert.prepare import Prepared, check_inputs, check_options, prepare
from pass_wds.convert.report import Progress, Summary, describe_plan
from pass_wds.convert.writing import ShardResult, ShardTask, TaskItem, WriteOptions, write_shard
from pass_wds.format import manifest


def make_shards(
    config: ConvertConfig | None = None,
    /,
    *,
    on_progress: Callable[[int, int], Any] | None = None,
    **options: Any,
) -> Summary:
    """Convert raw images and an allowlist into WebDataset shards; the library entry point (the CLI calls it).

    ``make_shards(inputs=["PASS.{0..9}.tar"], metadata="pass_metadata.csv", output="out/")``, or
    ``make_shards(ConvertConfig(...))`` (keyword options then override its fields). The options are the
    fields of :class:`~pass_wds.convert.options.ConvertConfig` (the YAML keys and long flags of
    ``make-shards``; ``progress`` is the bar). ``on_progress(done, total)`` is called as each shard
    finishes. Returns the :class:`~pass_wds.convert.report.Summary`; a bad option, input or output raises
    ``ConfigError`` (one line) before anything is read or written. A rerun with the same inputs and options
    resumes.
    """
    return _run(_config(config, options), on_progress)


def dry_run(config: ConvertConfig | None = None, /, **options: Any) -> list[str]:
    """List, join and plan exactly as :func:`make_shards` would, and describe the result; nothing is written."""
    cfg = _config(config, options)
    return describe_plan(cfg, prepare(cfg))


def _config(config: ConvertConfig | None, options: dict[str, Any]) -> ConvertConfig:
    if config is not None and not options:
        return config
    base = to_dict(config) if config is not None else {}
    return from_dict(ConvertConfig, {**base, **options}, source="make_shards()")


def _run(cfg: ConvertConfig, on_progress: Callable[[int, int], Any] | None) -> Summary:
    started = time.monotonic()
    # every check that needs no listing comes first (listing PASS reads 187 GB); the output before the inputs
    check_options(cfg)
    check_output_writable(str(cfg.output), cfg.storage_options, cfg.retry)
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
        claim_output(cfg, prep.digest, len(prep.plan.shards), foreign, partial=bounds is not None)
        lock.keep()
        results, kept = _write_all(cfg, prep, ex, on_progress, bounds)
        resumed = {
            "shards_resumed": len(kept),
            "resumed_samples": sum(r.nsamples for r in kept),
            "resumed_bytes": sum(r.filesize for r in kept),
        }
        if bounds is not None:  # one task of many: the run without --shard-range writes the manifest
            return Summary.of(str(cfg.output), results, started, partial=bounds, **resumed)
        summary = finish(cfg, prep, results, started, foreign)
    for k, v in resumed.items():
        setattr(summary, k, v)
    return summary


def _already_complete(cfg: ConvertConfig, prep: Prepared) -> Summary | None:
    """A finished output of the same plan (every shard present at its manifest size) needs no work."""
    out, so = str(cfg.output), cfg.storage_options
    index = read_json(storage.join(out, manifest.INDEX), so, cfg.retry)
    if index is None or index.get("plan_digest") != prep.digest:
        return None
    sizes = {}
    try:
        for entry in index["shardlist"]:
            sizes[entry["url"]] = storage.file_size(storage.join(out, entry["url"]), so, retry=cfg.retry)
    except FileNotFoundError:
        return None
    if any(sizes[e["url"]] != e["filesize"] for e in index["shardlist"]):
        return None
    stats = read_json(storage.join(out, manifest.STATS), so, cfg.retry) or {}
    summary = Summary(out, shards=len(sizes), shards_resumed=len(sizes))
    summary.samples = index["totals"]["samples"]
    summary.output_bytes = index["totals"]["bytes"]
    summary.rejected = Counter(stats.get("rejected", {}))
    summary.metadata_without_image = int(stats.get("metadata_without_image", 0))
    return summary


def _tasks(cfg: ConvertConfig, prep: Prepared, todo: list[int]) -> Iterator[ShardTask]:
    opts = WriteOptions(
        validate=cfg.validate,
        resize_max_side=cfg.resize_max_side,
        quality=(cfg.quality or 95) if cfg.reencode else None,
        max_image_pixels=cfg.max_image_pixels,
        attribution_columns=prep.attribution_columns,
        storage_options=cfg.storage_options,
        retry=cfg.retry,
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


def _task_items(prep: Prepared, idx: np.ndarray) -> list[TaskItem]:
    """What a shard writer needs for the items ``idx`` (built per shard, when its task is sent)."""
    items, inputs = prep.items, prep.inputs
    keys, members = items.keys.take(idx).to_pylist(), items.members.take(idx).to_pylist()
    input_index = items.input_index[idx].tolist()
    rows = prep.metadata.bodies(prep.rows[idx].tolist()) if prep.metadata is not None else [None] * len(idx)
    urls = item_urls(inputs, input_index, members)
    return [
        TaskItem(
            key=k,
            url=u,
            input_name=inputs[s].name,
            member=m,
            offset=o,
            size=z,
            from_tar=inputs[s].kind == "tar",
            row=r,
        )
        for k, u, s, m, o, z, r in zip(
            keys,
            urls,
            input_index,
            members,
            items.offsets[idx].tolist(),
            items.sizes[idx].tolist(),
            rows,
            strict=True,
        )
    ]


def _write_all(
    cfg: ConvertConfig,
    prep: Prepared,
    executor: executors.Executor,
    on_progress: Callable[..., Any] | None,
    bounds: tuple[int, int] | None = None,
) -> tuple[list[ShardResult], list[ShardResult]]:
    """Write the shards not yet done; returns all results and those kept from earlier runs."""
    so = cfg.storage_options
    listing = set(storage.listdir(str(cfg.output), so, retry=cfg.retry))
    wanted = range(*bounds) if bounds is not None else range(len(prep.plan.shards))
    results: dict[int, ShardResult] = {}
    for s in wanted:
        done = kept_result(cfg, prep.digest, s, listing)
        if done is not None:
            results[s] = done
    kept = list(results.values())
    todo = [s for s in wanted if s not in results]
    bar = Progress(
        prep, cfg, wanted, already={s: len(prep.plan.shards[s]) for s in results}, callback=on_progress
    )

    def record(result: ShardResult) -> None:
        record_shard(cfg, prep.digest, result)
        results[result.index] = result
        bar.shard_done(result, len(prep.plan.shards[result.index]))

    try:
        for result in executor.imap_unordered(write_shard, _tasks(cfg, prep, todo)):
            record(result)
    finally:
        bar.close()
    return [results[s] for s in sorted(results)], kept
