"""Converter: make-shards against the copy floor, a webdataset ShardWriter loop and LitData's optimize().

Same raw PASS-shaped tars, same disk, one run, cases interleaved round by round (a shared machine drifts),
median of ``--repeats``. Every case is timed until its output is durable: its command, then ``sync``
(make-shards fsyncs its shards itself; ``cp`` and the baselines do not). The copy floor is also reported
without the sync. The page cache is dropped before each case when the kernel allows it (root and writable
``/proc/sys/vm/drop_caches``); otherwise the inputs are warm in the cache for every case alike.

Cases: ``cp`` (+ ``sync``), make-shards lossless without validation (``--no-validate``) and with it (full
decode of every image), each with ``--workers 1`` and all cores, the ShardWriter loop
(``baselines/wds_shardwriter.py``: tar order, no shuffle, no validation, no index), and LitData ``optimize``
(``baselines/litdata_optimize.py``, original bytes) with 1 worker and all cores, and make-shards on a Dask
``LocalCluster`` of all cores (``ms-dask-N``, target: within 1.15x of ``ms-v-N``, the same run on local
processes).

``--scaling 1,2,4`` adds a simulated multi-node run: a ``dask scheduler`` and N ``dask worker`` processes
(one thread each, like N single-core nodes) on 127.0.0.1, make-shards ``--scheduler`` against them, throughput
per N against N = 1 measured in the same run (the cluster is started before the clock, as an existing one).

    python benchmarks/bench_convert.py [--images 20000 | --quick] [--repeats 3] [--cases cp,ms-nv-1,...]
    python benchmarks/bench_convert.py --cases ms-v-2,ms-dask-2 --shard-size 64MB --scaling 1,2,3,4 \
        --result convert_dask
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    DATA,
    FULL_IMAGES,
    QUICK_IMAGES,
    REPO,
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
BASE = REPO / "benchmarks" / "baselines"


def case_commands(
    raw: Path, out: Path, cores: int, shard_size: str = "256MB"
) -> dict[str, tuple[str, list[str]]]:
    """name → (description, argv). ``out`` does not exist before a case and is removed after it."""
    tars = sorted(str(p) for p in raw.glob("PASS.*.tar"))
    ms = [PY, "-m", "pass_wds.cli", "make-shards", *tars, "--metadata", str(raw / "pass_metadata.csv")]
    ms += ["--output", str(out), "--shard-size", shard_size, "--no-progress"]
    cases: dict[str, tuple[str, list[str]]] = {
        "cp": ("cp of the raw tars (+ sync): the I/O floor", ["sh", "-c", f'mkdir -p "{out}" && cp {" ".join(tars)} "{out}/"']),
        "ms-nv-1": ("make-shards --no-validate --workers 1", [*ms, "--no-validate", "--workers", "1"]),
        f"ms-nv-{cores}": (f"make-shards --no-validate --workers {cores}", [*ms, "--no-validate", "--workers", str(cores)]),
        "ms-v-1": ("make-shards (validate) --workers 1", [*ms, "--workers", "1"]),
        f"ms-v-{cores}": (f"make-shards (validate) --workers {cores}", [*ms, "--workers", str(cores)]),
        f"ms-dask-{cores}": (f"make-shards (validate) --cluster local --workers {cores} (Dask)", [*ms, "--cluster", "local", "--workers", str(cores)]),
        "wds-shardwriter": ("webdataset ShardWriter loop (1 process)", [PY, str(BASE / "wds_shardwriter.py"), str(raw), str(out)]),
        "litdata-1": ("LitData optimize(), 1 worker", [PY, str(BASE / "litdata_optimize.py"), str(raw), str(out), "1"]),
        f"litdata-{cores}": (f"LitData optimize(), {cores} workers", [PY, str(BASE / "litdata_optimize.py"), str(raw), str(out), str(cores)]),
    }  # fmt: skip
    return cases


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_case(argv: list[str], out: Path, drop: bool) -> dict[str, float]:
    rmtree(out)
    subprocess.run(["sync"], check=True)
    dropped = drop_caches() if drop else False
    m = run_measured(argv)
    if m.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({m.returncode}):\n{m.output[-3000:]}")
    t0 = time.perf_counter()
    subprocess.run(["sync"], check=True)
    sync_s = time.perf_counter() - t0
    result = {
        "wall_s": m.wall_s + sync_s,
        "wall_no_sync_s": m.wall_s,
        "sync_s": sync_s,
        "peak_rss_mb": m.peak_rss_mb,
        "peak_proc_rss_mb": m.peak_proc_rss_mb,
        "cpu_s": m.cpu_s,
        "output_bytes": _dir_bytes(out),
        "page_cache_dropped": dropped,
    }
    rmtree(out)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=FULL_IMAGES, help=f"raw set size (default {FULL_IMAGES})")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_IMAGES} images, 2 repeats")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default="", help="comma-separated subset of case names")
    ap.add_argument("--no-drop-caches", action="store_true", help="keep the page cache between cases")
    ap.add_argument(
        "--photos",
        action="store_true",
        help="use images derived from the corpus photos (bench-data/photos-N); writes convert_photos.json",
    )
    ap.add_argument("--scaling", default="", help="worker counts of the simulated multi-node run, e.g. 1,2,4")
    ap.add_argument("--shard-size", default="256MB", help="make-shards --shard-size (default 256MB)")
    ap.add_argument("--result", default=None, help="results/<NAME>.json (default: convert or convert_photos)")
    args = ap.parse_args()
    images = QUICK_IMAGES if args.quick else args.images
    repeats = 2 if args.quick and args.repeats == 3 else args.repeats
    cores = os.cpu_count() or 1

    raw = raw_dataset(images, photos=args.photos)
    in_bytes = raw_bytes(raw)
    out = DATA / "convert-out"
    cases = case_commands(raw, out, cores, args.shard_size)
    if args.cases:
        wanted = args.cases.split(",")
        unknown = [c for c in wanted if c not in cases]
        if unknown:
            ap.error(f"unknown cases {unknown}; known: {', '.join(cases)}")
        cases = {k: v for k, v in cases.items() if k in wanted}
    can_drop = not args.no_drop_caches and drop_caches()
    m = machine()
    print(f"machine: {machine_line(m)}")
    print(f"data: {raw.relative_to(REPO)}: {images} images, {in_bytes / 1e6:.0f} MB in raw tars; ")
    print(f"page cache dropped before each case: {can_drop}; {repeats} repeats, interleaved", flush=True)

    runs: dict[str, list[dict[str, float]]] = {k: [] for k in cases}
    for r in range(repeats):
        for name, (_, argv) in cases.items():
            res = run_case(argv, out, can_drop)
            runs[name].append(res)
            print(
                f"  round {r + 1} {name:18s} {res['wall_s']:7.2f} s  peak RSS {res['peak_rss_mb']:7.0f} MB",
                flush=True,
            )

    rows: list[dict[str, Any]] = []
    floor = median([x["wall_s"] for x in runs["cp"]]) if "cp" in runs else None
    for name, (desc, _) in cases.items():
        wall = median([x["wall_s"] for x in runs[name]])
        rows.append(
            {
                "case": name,
                "description": desc,
                "wall_s": wall,
                "wall_no_sync_s": median([x["wall_no_sync_s"] for x in runs[name]]),
                "mb_per_s": in_bytes / 1e6 / wall,
                "images_per_s": images / wall,
                "peak_rss_mb": median([x["peak_rss_mb"] for x in runs[name]]),
                "peak_proc_rss_mb": median([x["peak_proc_rss_mb"] for x in runs[name]]),
                "cpu_s": median([x["cpu_s"] for x in runs[name]]),
                "x_floor": wall / floor if floor else None,
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
                ("x_floor", "× cp floor", ".2f"),
                ("mb_per_s", "MB/s", ".0f"),
                ("images_per_s", "images/s", ".0f"),
                ("peak_rss_mb", "peak RSS MB (tree)", ".0f"),
            ],
        )
    )
    if "cp" in runs:
        print(f"\ncp without sync: {median([x['wall_no_sync_s'] for x in runs['cp']]):.2f} s")
    nv = next((r for r in rows if r["case"] == f"ms-nv-{cores}"), None) or next(
        (r for r in rows if r["case"] == "ms-nv-1"), None
    )
    if nv and nv["x_floor"]:
        verdict = "OK" if nv["x_floor"] <= 1.2 else "MISSED"
        print(
            f"target: lossless repack without validation within 1.2x of the copy floor: {nv['x_floor']:.2f}x {verdict}"
        )
    dask_row = next((r for r in rows if r["case"] == f"ms-dask-{cores}"), None)
    local_row = next((r for r in rows if r["case"] == f"ms-v-{cores}"), None)
    dask_vs_local = None
    if dask_row and local_row:
        dask_vs_local = dask_row["wall_s"] / local_row["wall_s"]
        verdict = "OK" if dask_vs_local <= 1.15 else "MISSED"
        print(
            f"target: Dask LocalCluster within 1.15x of local processes ({cores} workers): {dask_vs_local:.2f}x {verdict}"
        )
    counts = [int(n) for n in args.scaling.split(",")] if args.scaling else []
    scaling = scaling_run(raw, images, in_bytes, counts, repeats, args.shard_size) if counts else None
    write_result(
        args.result or ("convert_photos" if args.photos else "convert"),
        {
            "machine": m,
            "images": images,
            "input_bytes": in_bytes,
            "repeats": repeats,
            "data": "photos" if args.photos else "synthetic",
            "page_cache_dropped": can_drop,
            "command": " ".join(sys.argv),
            "results": rows,
            "dask_vs_local": dask_vs_local,
            "scaling": scaling,
        },
    )


def scaling_run(
    raw: Path, images: int, in_bytes: int, counts: list[int], repeats: int, shard_size: str
) -> list[dict[str, Any]]:
    """Throughput of make-shards --scheduler against N single-threaded dask workers on loopback."""
    import json as _json
    import shutil
    import tempfile

    tars = sorted(str(p) for p in raw.glob("PASS.*.tar"))
    out = DATA / "convert-out"
    rows: list[dict[str, Any]] = []
    for n in counts:
        tmp = Path(tempfile.mkdtemp(prefix="pass-wds-dask-"))
        sched_file = tmp / "scheduler.json"
        procs = [_spawn([PY, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(sched_file)], tmp / "s.log")]  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not sched_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            for i in range(n):
                procs.append(_spawn([PY, "-m", "dask", "worker", "--scheduler-file", str(sched_file), "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--name", f"node{i}"], tmp / f"w{i}.log"))  # fmt: skip
            from distributed import Client

            with Client(scheduler_file=str(sched_file), timeout="30s") as c:
                c.wait_for_workers(n, timeout=120)
                address = _json.loads(sched_file.read_text())["address"]
            argv = [PY, "-m", "pass_wds.cli", "make-shards", *tars, "--metadata", str(raw / "pass_metadata.csv"),
                    "--output", str(out), "--shard-size", shard_size, "--no-progress", "--scheduler", address]  # fmt: skip
            walls = [run_case(argv, out, False)["wall_s"] for _ in range(repeats)]
        finally:
            for p in procs:
                p.kill()
                p.wait()
            shutil.rmtree(tmp, ignore_errors=True)
        wall = median(walls)
        rows.append({"workers": n, "wall_s": wall, "images_per_s": images / wall, "mb_per_s": in_bytes / 1e6 / wall, "runs": walls})  # fmt: skip
        print(f"  scaling: {n} workers {wall:7.2f} s  {images / wall:7.0f} images/s", flush=True)
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup"] = r["images_per_s"] / base
    print()
    print(
        table(
            rows,
            [
                ("workers", "dask workers (loopback)", ""),
                ("wall_s", "wall s", ".2f"),
                ("images_per_s", "images/s", ".0f"),
                ("mb_per_s", "MB/s", ".0f"),
                ("speedup", f"vs {counts[0]} worker(s)", ".2f"),
            ],
        )
    )
    return rows


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)


if __name__ == "__main__":
    main()
