"""``pass-wds shuffle-report``: how well the loader's batches mix, against a uniform shuffle (imports torch
when run). Computed from the epoch plan and the shards' ``.idx`` sizes; no image is read."""

from __future__ import annotations

import argparse
from typing import Any

from pass_wds.cli.common import (
    add_allow_external_urls,
    add_allow_raw_archives,
    add_retry_options,
    add_storage_options,
    print_result,
    source_arg,
)

# The loader options that change the plan, as (flag, LoaderConfig field, type, help).
PLAN_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("--seed", "seed", int, "seed of the plan (default: 0)"),
    ("--segment-samples", "segment_samples", str, "samples per segment (default: the loader's)"),
    (
        "--shuffle-buffer-bytes",
        "shuffle_buffer_bytes",
        str,
        "per-reader shuffle buffer (default: the loader's)",
    ),
    ("--remainder", "remainder", str, "drop | pad (default: drop)"),
    ("--epoch-samples", "epoch_samples", int, "resampled mode: samples per epoch"),
    ("--cache-dir", "cache_dir", str, "node-local shard cache the run will use (it changes the defaults)"),
    ("--cache-bytes", "cache_bytes", str, "size of that cache (default: the loader's)"),
)


def _cmd_shuffle_report(args: argparse.Namespace) -> int:
    from pass_wds.config import ConfigError
    from pass_wds.loading.loader import LoaderConfig

    options: dict[str, Any] = {}
    if args.config:
        from pass_wds.config import load_yaml

        options.update(load_yaml(args.config))
    for _, dest, _, _ in PLAN_OPTIONS:
        value = getattr(args, dest)
        if value is not None:
            options[dest] = int(value) if isinstance(value, str) and value.isdigit() else value
    if args.source:
        options["source"] = source_arg(args.source)
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    if "batch_size" not in options:
        raise ConfigError("--batch-size is required (or batch_size in --config)")
    if args.world_size < 1:
        raise ConfigError(f"--world-size must be >= 1, got {args.world_size}")
    if args.workers is not None:
        options["num_workers"] = args.workers
    if args.epoch < 0:
        raise ConfigError(f"--epoch must be >= 0, got {args.epoch}")
    if getattr(args, "storage_options", None):
        options["storage_options"] = args.storage_options
    for name in ("retry_seconds", "read_timeout"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    if args.allow_external_urls:
        options["allow_external_urls"] = True
    if args.allow_raw_archives:
        options["allow_raw_archives"] = True
    for unused in ("recipe", "decode", "device", "rank"):  # nothing is decoded or sent anywhere
        options.pop(unused, None)
    options.update(rank=0, world_size=args.world_size)
    from pass_wds.config import from_dict

    cfg = from_dict(LoaderConfig, options, source=args.config or "pass-wds shuffle-report")
    loader = cfg.build()
    report = loader.shuffle_report(epoch=args.epoch, group_by=args.group_by)
    print_result(report, args.json)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "shuffle-report",
        help="how well the loader's batches mix, against a uniform shuffle (no image is read)",
        description="How well the loader's batches mix, against a uniform shuffle of the same samples: "
        "distinct shards per batch, same-shard pair lift, pair recurrence between epochs, read sizes. "
        "Computed from the epoch plan and the shards' .idx sizes; no image is read.",
    )
    p.add_argument("source", nargs="*", metavar="SOURCE", help="dataset source (default: source in --config)")
    p.add_argument(
        "--config", metavar="YAML", help="a loader config (configs/loader.yaml); flags override it"
    )
    p.add_argument("--batch-size", type=int, default=None, help="per rank")
    p.add_argument("--world-size", type=int, default=1, help="ranks of the run (default: 1)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers per rank (default: 4)")
    p.add_argument("--epoch", type=int, default=0, help="the epoch reported (and its successor; default: 0)")
    p.add_argument("--group-by", metavar="json:FIELD", help="also report mixing of a JSON field's values")
    for flag, dest, type_, help_ in PLAN_OPTIONS:
        p.add_argument(flag, dest=dest, type=type_, default=None, help=help_)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    add_storage_options(p)
    add_retry_options(p, suppress=True)
    add_allow_external_urls(p)
    add_allow_raw_archives(p)
    p.set_defaults(func=_cmd_shuffle_report)


__all__ = ["register"]
