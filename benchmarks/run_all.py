"""Run every benchmark in turn (``make bench``), then the plot. Each writes benchmarks/results/<name>.json.

    python benchmarks/run_all.py [--quick]      # --quick: 2,000 images, 2 repeats, short cases (~15 min)

Order: planning (1.44M items), augmentation ratios (bench_augment.py), converter, loader, S3 storage
(bench_s3.py, when present), GPU (skipped without CUDA), plot, and docs/benchmarks.md (report.py). A failing benchmark is reported and the rest
still run; the exit code is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data and short runs")
    args = ap.parse_args()
    q = ["--quick"] if args.quick else []
    py = sys.executable
    images = "2000" if args.quick else "20000"
    steps: list[tuple[str, list[str]]] = [
        ("planning", [py, str(HERE / "bench_planning.py")]),
        ("augment", [py, str(HERE / "bench_augment.py"), "--seconds", "3" if args.quick else "10"]),
        ("convert", [py, str(HERE / "bench_convert.py"), *q]),
        ("loader", [py, str(HERE / "bench_loader.py"), *q]),
    ]
    if (HERE / "bench_s3.py").is_file():
        steps.append(("s3", [py, str(HERE / "bench_s3.py")]))
    shards = HERE.parent / "bench-data" / f"shards-{images}" / "index.json"
    steps.append(("gpu", [py, str(HERE / "bench_gpu.py"), "--source", str(shards)]))
    steps.append(("plot", [py, str(HERE / "plot.py")]))
    steps.append(("report", [py, str(HERE / "report.py")]))
    failed = []
    for name, cmd in steps:
        print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd).returncode
        print(f"=== {name}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
