"""Revisions: ``make-shards update`` of a takedown against a full reconversion, same data, same run.

PASS v3 removed 131 images from 563 shards; because make-shards shuffles globally, 131 random keys touch
about ``S·(1−(1−1/S)^k)`` = 117 of the 563 shards. This benchmark keeps PASS's shape where it decides the work
(563 shards, 131 random keys) and scales the shards down (``--per-shard`` samples each; PASS has ~2,557 at
~330 MB): the update rewrites the touched shards from themselves, the reconversion lists and rewrites
everything from the raw tars, as a team without ``update`` would (``make-shards --overwrite`` with the new
allowlist: with validation as the first conversion was made, and ``--no-validate``, its fastest careful
form). Cases are interleaved round by round, median of ``--repeats``; each is timed until its output is
durable (command + ``sync``); each update starts from a fresh copy of the first conversion (not timed).

    python benchmarks/bench_update.py [--per-shard 20] [--keys 131] [--shards 563] [--repeats 3] [--quick]
    python benchmarks/bench_update.py --raw-images 11260 --per-shard 202 --keys 13 --result update_large_shards

The second form keeps the fraction of shards touched (13 keys in 56 shards touch 21 %, as 131 in 563 do)
with shards ten times larger, closer to PASS's, where per-file costs (open, fsync, unlink) weigh less.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    DATA,
    drop_caches,
    machine,
    machine_line,
    median,
    raw_bytes,
    raw_dataset,
    rmtree,
    run_measured,
    table,
    write_result,
)

PY = sys.executable


def _make_shards(raw: Path, metadata: Path, out: Path, per_shard: int, *extra: str) -> list[str]:
    tars = sorted(str(p) for p in raw.glob("PASS.*.tar"))
    return [
        PY, "-m", "pass_wds.cli", "make-shards", *tars, "--metadata", str(metadata), "--output", str(out),
        "--shard-size", "1TB", "--max-count", str(per_shard), "--no-progress", "--workers", str(os.cpu_count() or 1),
        *extra,
    ]  # fmt: skip


def _keys(out: Path) -> list[str]:
    index = json.loads((out / "index.json").read_text())
    keys = []
    for e in index["shardlist"]:
        lines = (out / e["idx"]).read_text().splitlines()[1:]
        keys += [ln.split()[3].split(".", 1)[0] for ln in lines if ln.strip()]
    return keys


def _timed(argv: list[str], drop: bool) -> dict[str, float]:
    subprocess.run(["sync"], check=True)
    dropped = drop_caches() if drop else False
    m = run_measured(argv)
    if m.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({m.returncode}):\n{m.output[-3000:]}")
    t0 = time.perf_counter()
    subprocess.run(["sync"], check=True)
    return {
        "wall_s": m.wall_s + time.perf_counter() - t0,
        "peak_rss_mb": m.peak_rss_mb,
        "cpu_s": m.cpu_s,
        "page_cache_dropped": dropped,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=563, help="shards of the output (PASS: 563)")
    ap.add_argument("--per-shard", type=int, default=20, help="samples per shard (PASS: ~2,557)")
    ap.add_argument("--keys", type=int, default=131, help="random keys removed (PASS v3: 131)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="4 samples per shard, 2 repeats")
    ap.add_argument(
        "--raw-images",
        type=int,
        default=None,
        help="size of the raw set (default: shards × per-shard); with "
        "a larger --per-shard the same raw set gives fewer, larger shards",
    )
    ap.add_argument("--result", default="update", help="results/<NAME>.json (default: update)")
    ap.add_argument("--no-drop-caches", action="store_true")
    args = ap.parse_args()
    per_shard = 4 if args.quick else args.per_shard
    repeats = 2 if args.quick and args.repeats == 3 else args.repeats
    images = args.raw_images or args.shards * per_shard
    raw = raw_dataset(images)
    base = DATA / f"update-base-{images}-{per_shard}"
    if not (base / "index.json").is_file():
        rmtree(base)
        subprocess.run(_make_shards(raw, raw / "pass_metadata.csv", base, per_shard), check=True)
    keys = _keys(base)
    rng = random.Random(131)
    gone = sorted(rng.sample(keys, args.keys))
    work = DATA / "update-work"
    work.mkdir(parents=True, exist_ok=True)
    keys_file = work / "takedown.txt"
    keys_file.write_text("".join(k + "\n" for k in gone))
    allow = work / "allowlist-v3.csv"
    with (
        open(raw / "pass_metadata.csv", newline="", encoding="utf-8") as f,
        open(allow, "w", newline="", encoding="utf-8") as g,
    ):
        reader, writer = csv.reader(f), csv.writer(g, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        col = header.index("hash")
        drop_set = set(gone)
        writer.writerows(r for r in reader if r[col] not in drop_set)
    out = work / "out"
    index = json.loads((base / "index.json").read_text())
    S = len(index["shardlist"])
    expected = S * (1 - (1 - 1 / S) ** args.keys)

    def update_case(flag: list[str]) -> list[str]:
        return [
            PY,
            "-m",
            "pass_wds.cli",
            "make-shards",
            "update",
            str(out),
            *flag,
            "-j",
            str(os.cpu_count() or 1),
        ]

    cases: dict[str, tuple[str, list[str], bool]] = {
        "update-allowlist": ("make-shards update --metadata v3.csv", update_case(["--metadata", str(allow)]), True),
        "update-remove": ("make-shards update --remove takedown.txt", update_case(["--remove", str(keys_file)]), True),
        "reconvert-validate": ("make-shards --overwrite (validate), all cores", _make_shards(raw, allow, out, per_shard, "--overwrite"), False),
        "reconvert-no-validate": ("make-shards --overwrite --no-validate, all cores", _make_shards(raw, allow, out, per_shard, "--overwrite", "--no-validate"), False),
    }  # fmt: skip
    can_drop = not args.no_drop_caches and drop_caches()
    m = machine()
    print(f"machine: {machine_line(m)}")
    print(
        f"output: {S} shards, {len(keys):,} samples ({sum(e['filesize'] for e in index['shardlist']) / 1e6:,.0f} MB), "
        f"raw tars {raw_bytes(raw) / 1e6:,.0f} MB; removing {args.keys} random keys (expected shards touched: "
        f"{expected:.1f}); page cache dropped: {can_drop}",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in cases}
    facts: dict[str, Any] = {}
    for r in range(repeats):
        for name, (_, argv, from_base) in cases.items():
            rmtree(out)
            if from_base:
                shutil.copytree(base, out)
            res = _timed(argv, can_drop)
            new = json.loads((out / "index.json").read_text())
            assert sorted(_keys(out)) == sorted(set(keys) - set(gone)), f"{name}: wrong samples"
            if from_base:
                h = new["history"][-1]
                rewritten = [e for e in new["shardlist"] if "-r1." in e["url"]]
                res.update(
                    shards_rewritten=len(h["replaced"]),
                    bytes_written=sum(e["filesize"] for e in rewritten),
                    bytes_read=sum(x["old"]["filesize"] for x in h["replaced"]),
                )
                facts[name] = {k: res[k] for k in ("shards_rewritten", "bytes_written", "bytes_read")}
            else:
                res["bytes_written"] = new["totals"]["bytes"]
            runs[name].append(res)
            print(
                f"  round {r + 1} {name:22s} {res['wall_s']:7.2f} s  peak RSS {res['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
    rmtree(out)
    total_bytes = sum(e["filesize"] for e in index["shardlist"])
    rows = []
    upd = median([x["wall_s"] for x in runs["update-allowlist"]])
    for name, (desc, _, _) in cases.items():
        wall = median([x["wall_s"] for x in runs[name]])
        rows.append(
            {
                "case": name,
                "description": desc,
                "wall_s": wall,
                "x_update": wall / upd,
                "bytes_written_mb": median([x["bytes_written"] for x in runs[name]]) / 1e6,
                "peak_rss_mb": median([x["peak_rss_mb"] for x in runs[name]]),
                "cpu_s": median([x["cpu_s"] for x in runs[name]]),
                "runs": runs[name],
            }
        )
    print()
    print(
        table(
            rows,
            [
                ("description", "case", ""),
                ("wall_s", "wall s", ".2f"),
                ("x_update", "× update", ".1f"),
                ("bytes_written_mb", "MB written", ".1f"),
                ("peak_rss_mb", "peak RSS MB", ".0f"),
            ],
        )
    )
    f = facts["update-allowlist"]
    print(
        f"\nupdate: {f['shards_rewritten']} of {S} shards rewritten (expected {expected:.1f}), "
        f"{f['bytes_written'] / 1e6:,.1f} MB written of {total_bytes / 1e6:,.1f} MB ({f['bytes_written'] / total_bytes:.1%}), "
        f"{f['bytes_read'] / 1e6:,.1f} MB read"
    )
    write_result(
        args.result,
        {
            "machine": m,
            "shards": S,
            "samples": len(keys),
            "per_shard": per_shard,
            "keys": args.keys,
            "expected_shards_touched": expected,
            "output_bytes": total_bytes,
            "raw_bytes": raw_bytes(raw),
            "page_cache_dropped": can_drop,
            "repeats": repeats,
            "update": facts,
            "rows": rows,
            "command": " ".join(["python benchmarks/bench_update.py", *sys.argv[1:]]),
        },
    )


if __name__ == "__main__":
    main()
