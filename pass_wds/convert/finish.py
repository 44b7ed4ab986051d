"""The finish step of a full run: the side files (errors.jsonl, attribution.csv, metadata_without_image.txt,
stats.json, croissant.json), then ``index.json`` last (it marks completion), then the resume state goes."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice
from typing import Any

from pass_wds import __version__, storage
from pass_wds.convert.options import ConvertConfig, recorded_config
from pass_wds.convert.output import remove_leftovers, remove_state
from pass_wds.convert.prepare import Prepared
from pass_wds.convert.report import Summary
from pass_wds.convert.writing import ShardResult
from pass_wds.format import croissant, manifest


def finish(
    cfg: ConvertConfig,
    prep: Prepared,
    results: list[ShardResult],
    started: float,
    foreign: set[str] | frozenset[str] = frozenset(),
) -> Summary:
    """Write the side files and the manifest of a complete set of shards; returns the run's summary."""
    out, so = str(cfg.output), cfg.storage_options
    remove_leftovers(cfg, foreign)
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
    index = manifest.build_index(
        cfg.name,
        results,
        seed=cfg.seed,
        config=recorded_config(cfg),
        plan_digest=prep.digest,
        version=__version__,
        dataset_version=cfg.dataset_version,
    )
    storage.write_bytes(storage.join(out, manifest.CROISSANT), _croissant(cfg, prep, results, index), so)
    storage.write_bytes(
        storage.join(out, manifest.INDEX), manifest.dumps(index), so
    )  # last: marks completion
    remove_state(cfg)
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
