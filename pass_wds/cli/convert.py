"""``make-shards`` (also ``pass-wds make-shards``): options, YAML config, and the run's summary."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from pass_wds.cli.common import add_storage_options
from pass_wds.config import add_option_arguments, from_dict, load_yaml
from pass_wds.convert.options import ConvertConfig

MAKE_SHARDS_DESCRIPTION = (
    "Convert raw image tars or folders plus a metadata allowlist into size-balanced, shuffled WebDataset "
    "shards with index.json, DALI .idx indexes, checksums, errors.jsonl and CC-BY attribution.csv."
)


def add_make_shards_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag comes from ConvertConfig's declarations (only flags actually given override the YAML
    config); the rest are this command's own."""
    p.add_argument(
        "--config", metavar="YAML", help="read options from a YAML file (keys = long option names)"
    )
    add_option_arguments(p, ConvertConfig)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list, join and plan only: print the shard count, sizes and rejections; write nothing",
    )
    add_storage_options(p)


def config_from_args(args: argparse.Namespace) -> ConvertConfig:
    values: dict[str, Any] = load_yaml(args.config) if getattr(args, "config", None) else {}
    cli = {
        k: v for k, v in vars(args).items() if k not in ("config", "func", "command", "verbose", "dry_run")
    }
    values.update(cli)
    return from_dict(ConvertConfig, values, source=args.config or "options")


def cmd_make_shards(args: argparse.Namespace) -> int:
    from pass_wds.convert import executors
    from pass_wds.convert.make import dry_run, make_shards

    cfg = config_from_args(args)
    if getattr(args, "dry_run", False):
        for line in dry_run(cfg):
            print(line)
        return 0
    if cfg.scheduler or cfg.cluster:
        executors.check(cfg)  # one line when the dask extra is missing
        import distributed  # noqa: F401  (its import sets its loggers' levels: quiet them after it)

        # the client logs tracebacks when a scheduler or worker goes away; ours is the one line users act on
        for name in list(logging.root.manager.loggerDict):
            if name.split(".")[0] in ("distributed", "tornado"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    summary = make_shards(cfg)
    for line in summary.lines():
        print(line)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "make-shards",
        help="convert raw images + metadata into WebDataset shards",
        description=MAKE_SHARDS_DESCRIPTION,
    )
    add_make_shards_arguments(p)
    p.set_defaults(func=cmd_make_shards)
