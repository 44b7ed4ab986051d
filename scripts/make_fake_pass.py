#!/usr/bin/env python3
"""Write a PASS-shaped raw dataset (tars in the real member layout + pass_metadata.csv) for tests and benchmarks.

Examples:
  python scripts/make_fake_pass.py --out /tmp/fake --images 2000 --parts 4
  python scripts/make_fake_pass.py --out /tmp/fake-bad --images 200 --parts 2 --bad
  python scripts/make_fake_pass.py --out /tmp/fake-photos --images 500 --photos ../shared/corpus/photos
  python scripts/make_fake_pass.py --out /tmp/listing --listing-only 1440000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from pass_wds.fakedata import FakePassConfig, make_fake_pass, make_listing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="make_fake_pass.py",
        description=__doc__.split("\n\n")[0],
        epilog="Deterministic: the same options and --seed give byte-identical files.",
    )
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--images", type=int, default=200, help="number of good images (default 200)")
    p.add_argument(
        "--parts",
        type=int,
        default=None,
        help="number of PASS.<i>.tar parts (default 2; 10 with --listing-only)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--bad",
        action="store_true",
        help="also plant bad inputs (truncated, empty, text, bomb, dir/symlink/device, unsafe paths, duplicate, "
        "missing metadata, orphan rows) and unusual valid ones (PNG, CMYK, grayscale, progressive)",
    )
    p.add_argument(
        "--photos", metavar="DIR", help="make images from real photos under DIR instead of synthesising them"
    )
    p.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default: min(2, CPUs))"
    )
    p.add_argument(
        "--listing-only",
        type=int,
        metavar="N",
        help="write only a metadata CSV of N rows and listing.csv (key, source, member, offset, size), no images",
    )
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        if a.listing_only is not None:
            listing = make_listing(a.out, a.listing_only, parts=a.parts or 10, seed=a.seed)
            print(
                f"wrote {len(listing)} metadata rows and listing to {a.out} in {time.perf_counter() - t0:.1f}s"
            )
            return 0
        cfg = FakePassConfig(
            out=a.out,
            n_images=a.images,
            parts=a.parts or 2,
            seed=a.seed,
            bad=a.bad,
            photos=a.photos,
            workers=a.workers,
        )
        res = make_fake_pass(cfg)
    except (ValueError, OSError) as e:
        print(f"make_fake_pass: {e}", file=sys.stderr)
        return 2
    total = sum(t.stat().st_size for t in res.tars)
    c = res.expected["counts"]
    print(
        f"wrote {len(res.tars)} tars ({total / 1e6:.1f} MB), {c['metadata_rows']} metadata rows, "
        f"{c['accepted']} keys to keep, {c['rejected']} inputs to reject, to {a.out} "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
