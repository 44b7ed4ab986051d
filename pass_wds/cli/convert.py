"""``make-shards`` (also ``pass-wds make-shards``): options, YAML config, and the run's summary."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from pass_wds.cli.common import add_retry_options, add_storage_options
from pass_wds.config import from_dict, load_yaml
from pass_wds.convert.options import ConvertConfig

MAKE_SHARDS_DESCRIPTION = (
    "Convert raw image tars or folders plus a metadata allowlist into size-balanced, shuffled WebDataset "
    "shards with index.json, DALI .idx indexes, checksums, errors.jsonl and CC-BY attribution.csv."
)


def add_make_shards_arguments(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # only flags actually given override the YAML config
    p.add_argument(
        "inputs",
        nargs="*",
        default=S,
        metavar="INPUT",
        help="raw tar archives, image folders, globs or brace patterns ('PASS.{0..9}.tar'); local or fsspec URLs",
    )
    p.add_argument(
        "--config", metavar="YAML", help="read options from a YAML file (keys = long option names)"
    )
    p.add_argument(
        "-o", "--output", default=S, metavar="DIR", help="output folder or URL (s3://bucket/prefix)"
    )
    p.add_argument(
        "-m",
        "--metadata",
        default=S,
        metavar="FILE",
        help="metadata (CSV, TSV, JSON Lines, JSON, Parquet): the allowlist, joined on --key-column",
    )
    p.add_argument(
        "--key-column", default=S, help="metadata column matching image file name stems (default: hash)"
    )
    p.add_argument("--name", default=S, help="shard name prefix: NAME-000000.tar … (default: pass)")
    p.add_argument(
        "--shard-size", default=S, metavar="SIZE", help="target shard size, e.g. 256MB, 1GiB (default: 256MB)"
    )
    p.add_argument("--max-count", type=int, default=S, metavar="N", help="at most N samples per shard")
    p.add_argument("--seed", type=int, default=S, help="seed of the global shuffle (default: 0)")
    p.add_argument(
        "-j",
        "--workers",
        type=int,
        default=S,
        metavar="N",
        help="parallel processes (default: 1); with --cluster, Dask workers",
    )
    p.add_argument(
        "--validate",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="fully decode every image and reject broken ones (default: on)",
    )
    p.add_argument(
        "--allow-missing-metadata",
        action="store_true",
        default=S,
        help="keep images that have no metadata row (default: reject them)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=S,
        help="replace an existing output made with other inputs or options",
    )
    p.add_argument(
        "--resize-max-side",
        type=int,
        default=S,
        metavar="N",
        help="re-encode: shrink so the long side is at most N px (EXIF orientation applied first)",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=S,
        metavar="Q",
        help="re-encode as JPEG with quality Q (default when resizing: 95)",
    )
    p.add_argument(
        "--creator-column",
        default=S,
        help="metadata column naming the creator to credit (default: auto, e.g. unickname)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=S,
        metavar="N",
        help="reject larger images as decompression bombs (default: Pillow's 89,478,485)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="progress bar (default: on a terminal; plain log lines otherwise)",
    )
    p.add_argument(
        "--scheduler",
        default=S,
        metavar="ADDRESS",
        help="run the tasks on a running Dask cluster, e.g. tcp://host:8786 (needs pass-wds[dask])",
    )
    p.add_argument(
        "--cluster",
        default=S,
        choices=("local", "slurm"),
        help="start a Dask cluster: 'local' (--workers processes here) or 'slurm' (dask-jobqueue; the "
        "slurm_* job options come from --config, see configs/dask-slurm.yaml)",
    )
    p.add_argument(
        "--shard-range",
        default=S,
        metavar="START:END",
        help="write only shards START..END-1 and no manifest (one task of a Slurm array); "
        "then run once without it to finish",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list, join and plan only: print the shard count, sizes and rejections; write nothing",
    )
    add_storage_options(p)
    add_retry_options(p, suppress=True)


def config_from_args(args: argparse.Namespace) -> ConvertConfig:
    values: dict[str, Any] = load_yaml(args.config) if getattr(args, "config", None) else {}
    cli = {
        k: v for k, v in vars(args).items() if k not in ("config", "func", "command", "verbose", "dry_run")
    }
    values.update(cli)
    cfg = from_dict(ConvertConfig, values, source=args.config or "options")
    if isinstance(cfg.inputs, str):
        cfg.inputs = [cfg.inputs]
    return cfg


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
