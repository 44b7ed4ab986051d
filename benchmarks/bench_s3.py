"""Streaming throughput: local disk vs a local S3 server (moto) vs a static HTTP server, same shards, same run.

Every source is read through ``pass_wds.storage.open_stream`` (what the loader uses), one stream at a time and
with several concurrent streams; the S3 figure is also compared with fsspec's default block-wise file object
(``open_read``). Local reads come from the page cache (the files were just written), so the disk figure is an
upper bound; the remote servers run as separate processes on loopback.

    python benchmarks/bench_s3.py [--shards 6] [--shard-mb 32] [--streams 4]

Prints MB/s per source and the ratios to local disk; writes benchmarks/results/bench_s3.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import MOTO_CREDS, LocalS3, free_port, serve

from pass_wds import storage

RESULTS = Path(__file__).resolve().parent / "results"


def drain_stream(url: str, so: dict[str, Any] | None) -> int:
    n = 0
    with storage.open_stream(url, storage_options=so) as f:
        while chunk := f.read(1 << 20):
            n += len(chunk)
    return n


def drain_blockwise(url: str, so: dict[str, Any] | None) -> int:
    n = 0
    with storage.open_read(url, so) as f:
        while chunk := f.read(1 << 20):
            n += len(chunk)
    return n


def measure(urls: list[str], read: Callable[[str, Any], int], so: Any, streams: int, repeats: int) -> float:
    """Best MB/s over ``repeats`` passes over all shards with ``streams`` concurrent readers."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        with ThreadPoolExecutor(streams) as pool:
            total = sum(pool.map(lambda u: read(u, so), urls))
        best = max(best, total / 1e6 / (time.perf_counter() - start))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--shard-mb", type=int, default=32)
    ap.add_argument("--streams", type=int, default=4, help="concurrent streams in the parallel measurement")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "bench_s3.json"))
    args = ap.parse_args()

    os.environ.update(MOTO_CREDS)
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    procs: list[subprocess.Popen[bytes]] = []
    moto: LocalS3 | None = None
    try:
        names = [f"pass-{i:06d}.tar" for i in range(args.shards)]
        for name in names:
            with open(work / name, "wb") as f:
                for _ in range(args.shard_mb):
                    f.write(os.urandom(1 << 20))
        nbytes = args.shards * args.shard_mb * (1 << 20)

        moto = LocalS3()
        http_port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "http.server",
            str(http_port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(work),
        ]
        procs.append(serve(cmd, f"http://127.0.0.1:{http_port}/"))
        so = moto.storage_options
        moto.make_bucket("bench")
        fs, _ = storage.get_fs("s3://bench", so)
        for name in names:
            fs.put_file(str(work / name), f"bench/{name}")

        sources = {
            "local": ([str(work / n) for n in names], None, drain_stream),
            "s3": ([f"s3://bench/{n}" for n in names], so, drain_stream),
            "s3_fsspec_blockwise": ([f"s3://bench/{n}" for n in names], so, drain_blockwise),
            "http": ([f"http://127.0.0.1:{http_port}/{n}" for n in names], None, drain_stream),
        }
        result: dict[str, Any] = {
            "benchmark": "bench_s3",
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "data": {"shards": args.shards, "shard_bytes": args.shard_mb << 20, "total_bytes": nbytes},
            "streams": args.streams,
            "mb_per_s": {},
        }
        for label, (urls, opts, read) in sources.items():
            assert read(urls[0], opts) == args.shard_mb << 20  # warm-up and a length check
            one = measure(urls, read, opts, 1, args.repeats)
            par = measure(urls, read, opts, args.streams, args.repeats)
            result["mb_per_s"][label] = {"1_stream": round(one, 1), f"{args.streams}_streams": round(par, 1)}
        base = result["mb_per_s"]["local"]
        result["ratio_to_local"] = {
            label: {k: round(v / base[k], 3) for k, v in r.items()} for label, r in result["mb_per_s"].items()
        }
        for label, r in result["mb_per_s"].items():
            ratios = result["ratio_to_local"][label]
            print(
                f"{label:22s} "
                + "  ".join(f"{k}: {v:8.1f} MB/s ({ratios[k]:.2f}x local)" for k, v in r.items())
            )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    finally:
        if moto is not None:
            moto.close()
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
