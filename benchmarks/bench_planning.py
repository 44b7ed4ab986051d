"""Planning at PASS scale and beyond: peak RSS and time to join and plan 1.44M items (targets: < 2 GB,
< 60 s) and 14.4M items, ten times PASS (targets: <= 6 GB, <= 5 minutes).

Generates (once, cached) a 1.44M-row PASS-like metadata CSV and a matching tar listing, then measures in
fresh subprocesses, so each peak RSS is its own:

* ``pass-wds``: read the metadata (pyarrow, every row serialised to JSON once), build the listing, join,
  estimate every sample's tar footprint, shuffle and plan byte-balanced shards, and compute the plan digest.
* ``baseline``: what a plain script does: ``csv.DictReader`` into a dict of dicts, ``random.shuffle``, and cut
  the list into shards by count (no byte balance, no JSON, no digest). Skipped above 2M items: its dict of
  dicts would need ~20 GB at 14.4M.

    python benchmarks/bench_planning.py [--items 1440000] [--data bench-data/planning]
    python benchmarks/bench_planning.py --items 14400000   # writes results/planning-14400000.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE_MAX_ITEMS = 2_000_000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_pass_wds(data: Path) -> dict[str, float]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    from pass_wds import ConvertConfig
    from pass_wds.convert.columns import contiguous
    from pass_wds.convert.inputs import InputSpec, Listing, merge_listings
    from pass_wds.convert.metadata import read_metadata
    from pass_wds.convert.prepare import build_plan

    t0 = time.perf_counter()
    md = read_metadata(str(data / "pass_metadata.csv"))
    t1 = time.perf_counter()
    # The listing as the listing tasks hand it over: columns (Arrow strings, NumPy integers), one per field.
    types = {
        "key": pa.string(),
        "source": pa.string(),
        "member": pa.string(),
        "offset": pa.int64(),
        "size": pa.int64(),
    }
    table = pacsv.read_csv(
        data / "listing.csv",
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
    )
    encoded = pc.dictionary_encode(table.column("source")).combine_chunks()
    names = encoded.dictionary.to_pylist()
    rank = np.argsort(np.argsort(names))  # input index = rank of the archive's name, as with sorted(set(...))
    inputs = [InputSpec(str(data / n), "tar") for n in sorted(names)]
    source = rank[encoded.indices.to_numpy()].astype(np.int32)
    offsets, sizes = table.column("offset").to_numpy(), table.column("size").to_numpy()
    del encoded
    columns = {}
    for name in ("key", "member"):  # one contiguous column at a time, dropping its chunks as we go
        columns[name] = contiguous(table.column(name))
        table = table.drop_columns([name])
    del table
    listing = Listing(inputs, columns.pop("key"), columns.pop("member"), source, offsets, sizes)
    listing = merge_listings(inputs, [listing])
    t2 = time.perf_counter()
    cfg = ConvertConfig(inputs=["x"], output="y", shard_size="256MB", seed=0)
    prep = build_plan(cfg, listing, md)
    t3 = time.perf_counter()
    spread = prep.plan.spread()
    return {
        "items": len(prep.items),
        "shards": len(prep.plan.shards),
        "read_metadata_s": t1 - t0,
        "build_listing_s": t2 - t1,
        "join_plan_digest_s": t3 - t2,
        "total_s": t3 - t0,
        "peak_rss_mb": _rss_mb(),
        "shard_max_dev_pct": spread["max_dev_pct"],
        "plan_digest": prep.digest,
    }


def measure_baseline(data: Path) -> dict[str, float]:
    import csv
    import random

    t0 = time.perf_counter()
    with open(data / "pass_metadata.csv", newline="", encoding="utf-8") as f:
        meta = {row["hash"]: row for row in csv.DictReader(f)}
    with open(data / "listing.csv", newline="", encoding="utf-8") as f:
        listing = [row for row in csv.DictReader(f) if row["key"] in meta]
    random.Random(0).shuffle(listing)
    per_shard = 4000
    shards = [listing[i : i + per_shard] for i in range(0, len(listing), per_shard)]
    t1 = time.perf_counter()
    return {"items": len(listing), "shards": len(shards), "total_s": t1 - t0, "peak_rss_mb": _rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_440_000)
    ap.add_argument("--data", type=Path, default=REPO / "bench-data" / "planning")
    ap.add_argument(
        "--out", type=Path, default=None, help="default: results/planning.json (1.44M) or planning-N.json"
    )
    ap.add_argument("--_measure", choices=["pass-wds", "baseline"], help=argparse.SUPPRESS)
    args = ap.parse_args()

    data = args.data / str(args.items)
    if args._measure:
        fn = measure_pass_wds if args._measure == "pass-wds" else measure_baseline
        print(json.dumps(fn(data)))
        return
    if not (data / "listing.csv").exists():
        from pass_wds.fakedata import make_listing

        t = time.perf_counter()
        make_listing(data, args.items)
        print(f"generated {args.items:,} rows in {time.perf_counter() - t:.1f}s", file=sys.stderr)

    results = {}
    names = ("pass-wds", "baseline") if args.items <= BASELINE_MAX_ITEMS else ("pass-wds",)
    for name in names:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--items",
                str(args.items),
                "--data",
                str(args.data),
                "--_measure",
                name,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = results["pass-wds"]
    big = args.items > BASELINE_MAX_ITEMS
    targets = (
        {"peak_rss_mb_max": 6144, "total_s_max": 300} if big else {"peak_rss_mb_max": 2048, "total_s_max": 60}
    )
    report: dict[str, object] = {
        "benchmark": "planning",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "items": args.items,
        "results": results,
        "targets": targets,
    }
    if "baseline" in results:
        base = results["baseline"]
        report["ratios"] = {
            "time_vs_baseline": ours["total_s"] / base["total_s"],
            "rss_vs_baseline": ours["peak_rss_mb"] / base["peak_rss_mb"],
        }
    out = args.out or REPO / "benchmarks" / "results" / (
        "planning.json" if args.items == 1_440_000 else f"planning-{args.items}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'':12} {'time s':>8} {'peak RSS MB':>12} {'shards':>7}")
    for name, r in results.items():
        print(f"{name:12} {r['total_s']:8.1f} {r['peak_rss_mb']:12.0f} {r['shards']:7}")
    ratios = report.get("ratios")
    if isinstance(ratios, dict):
        print(
            f"pass-wds/baseline: time {ratios['time_vs_baseline']:.2f}x, RSS {ratios['rss_vs_baseline']:.2f}x"
        )
    print(
        f"{args.items:,} items: shard size spread {ours['shard_max_dev_pct']:.3f}% "
        f"(targets: <= {targets['peak_rss_mb_max']} MB, <= {targets['total_s_max']} s)"
    )


if __name__ == "__main__":
    main()
