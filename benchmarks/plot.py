"""Plot loader throughput by recipe and worker count from benchmarks/results/loader.json.

python benchmarks/plot.py [--results benchmarks/results]   →  loader_throughput.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(HERE / "results"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = Path(args.results)
    path = results / "loader.json"
    if not path.is_file():
        print(f"no {path}; run benchmarks/bench_loader.py first", file=sys.stderr)
        return 1
    data = json.loads(path.read_text())
    rows = data["results"]
    recipes = list(dict.fromkeys(r["recipe"] for r in rows if r["pipeline"] == "pass-wds"))
    series = list(dict.fromkeys((r["pipeline"], r["workers"]) for r in rows))
    by = {(r["pipeline"], r["workers"], r["recipe"]): r for r in rows}
    baseline_of = {"simclr-cpu": "simclr"}

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(series)
    for ax, metric, label in (
        (axes[0], "images_per_s", "images/s (wall)"),
        (axes[1], "images_per_cpu_s", "images per CPU-second (per core)"),
    ):
        for i, (pipe, w) in enumerate(series):
            xs, ys = [], []
            for j, rec in enumerate(recipes):
                r = by.get((pipe, w, rec if pipe == "pass-wds" else baseline_of.get(rec, rec)))
                if r is not None:
                    xs.append(j + (i - (len(series) - 1) / 2) * width)
                    ys.append(r[metric])
            name = f"{pipe}, {w} worker{'s' if w > 1 else ''}"
            ax.bar(xs, ys, width, label=name, hatch="" if pipe == "pass-wds" else "//", alpha=0.9)
        ax.set_xticks(range(len(recipes)))
        ax.set_xticklabels(recipes)
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    m = data["machine"]
    fig.suptitle(
        f"Loader throughput, {data['images']} PASS-like images, batch {data['batch_size']} "
        f"({m.get('cpu')}, {m.get('cores')} cores); baselines' simclr = full torchvision SimCLR on the CPU",
        fontsize=9,
    )
    fig.tight_layout()
    out = results / "loader_throughput.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
