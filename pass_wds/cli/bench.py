"""``pass-wds bench``: loader throughput and per-stage time on a source (imports torch when run)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from pass_wds.cli.common import (
    add_allow_external_urls,
    add_allow_raw_archives,
    add_retry_options,
    add_source,
    add_storage_options,
    print_result,
    source_arg,
)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.batches < 1 or args.batch_size < 1 or args.workers < 0 or args.profile_samples < 1:
        from pass_wds.errors import ConfigError

        raise ConfigError("--batches, --batch-size and --profile-samples must be >= 1, --workers >= 0")
    from pass_wds.bench import BenchConfig, run_bench

    cfg = BenchConfig(
        source=source_arg(args.source),
        recipe=args.recipe,
        workers=args.workers,
        batch_size=args.batch_size,
        batches=args.batches,
        device=args.device,
        colour=args.colour,
        decode=args.decode,
        profile_samples=args.profile_samples,
        seed=args.seed,
        storage_options=getattr(args, "storage_options", {}) or {},
        allow_external_urls=args.allow_external_urls,
        allow_raw_archives=args.allow_raw_archives,
        retry_seconds=args.retry_seconds,
        read_timeout=args.read_timeout,
    )
    # The loader logs the keys it drops at every epoch boundary; a benchmark crosses many of them.
    logging.getLogger("pass_wds.loading").setLevel(logging.WARNING)
    result = run_bench(cfg)
    print_result(result, args.json)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure loader throughput (images/s, MB/s) and per-stage time on a source",
        description="Measure loader throughput (images/s, MB/s) and per-stage time on a source.",
    )
    add_source(p)
    p.add_argument(
        "--recipe",
        default="simclr",
        help="eval | simclr | mocov2 | byol | dino | swav | recipe.yaml | decode | none (default: simclr)",
    )
    p.add_argument(
        "-j", "--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers"
    )
    p.add_argument("--batch-size", type=int, default=64, help="per batch (default: 64)")
    p.add_argument("--batches", type=int, default=20, help="batches timed after the first (default: 20)")
    p.add_argument(
        "--device", default=None, help="run the batched colour stage there (cpu, cuda); default: none"
    )
    p.add_argument(
        "--colour", choices=["cpu", "device"], default=None, help="override where the recipe's colour runs"
    )
    p.add_argument(
        "--decode",
        choices=["accurate", "fast", "device"],
        default=None,
        help="override the recipe's decode (device: batched decode in the device stage; needs --device)",
    )
    p.add_argument(
        "--profile-samples", type=int, default=128, help="samples in the per-stage profile (default: 128)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    add_storage_options(p)
    add_retry_options(p)
    add_allow_external_urls(p)
    add_allow_raw_archives(p)
    p.set_defaults(func=_cmd_bench)
