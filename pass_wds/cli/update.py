"""``make-shards update OUT`` (also ``pass-wds make-shards update``): a new revision of an output."""

from __future__ import annotations

import argparse
from typing import Any

from pass_wds.cli.common import add_storage_options

UPDATE_DESCRIPTION = (
    "Make a new revision of a make-shards output: remove the samples a new allowlist lacks (--metadata) or a "
    "keys file lists (--remove), rewriting only the shards that hold them, from the shards themselves (the raw "
    "images are not needed). Untouched shards keep their bytes, names and times; index.json records the "
    "lineage. Crash-safe: after a kill, run the same command again. See docs/revisions.md."
)


def add_update_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", metavar="OUT", help="the output folder or URL (s3://bucket/prefix) to update")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "-m",
        "--metadata",
        metavar="ALLOWLIST",
        help="the new allowlist (CSV, TSV, JSON Lines, JSON, Parquet): samples whose key it lacks are removed",
    )
    what.add_argument(
        "--remove",
        metavar="KEYS_FILE",
        help="a text file of keys to take down, one per line (a key or an image file name; # comments)",
    )
    p.add_argument(
        "--key-column", help="the allowlist's key column (default: the one the output was made with)"
    )
    p.add_argument(
        "--refresh-metadata",
        action="store_true",
        help="also rewrite the JSON of kept samples whose allowlist row changed (rewrites every shard holding one)",
    )
    p.add_argument("--dataset-version", metavar="NAME", help="the dataset version this revision is, e.g. v3")
    p.add_argument(
        "--keep-superseded",
        action="store_true",
        help="keep the replaced shards for a grace period (readers of the old index.json can finish); the "
        "next update without this flag deletes them (default: delete them once index.json is replaced)",
    )
    p.add_argument(
        "--purge-superseded",
        action="store_true",
        help="delete the shards earlier updates kept with --keep-superseded (alone: nothing else is done; with "
        "--metadata/--remove this is the default)",
    )
    p.add_argument(
        "--record-keys",
        action="store_true",
        help="write the removed keys into index.json's history (default: only their count and sha256, since "
        "a takedown list can itself be sensitive)",
    )
    p.add_argument(
        "--yes", action="store_true", help="allow an update that removes more than half the samples"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the removed count, the shards affected, the bytes rewritten and deleted; write nothing",
    )
    p.add_argument(
        "-j", "--workers", type=int, default=4, metavar="N", help="shards rewritten at once (default: 4)"
    )
    add_storage_options(p, default={})


def cmd_update(args: argparse.Namespace) -> int:
    from pass_wds.convert.update import UpdateOptions, run_update

    summary = run_update(
        UpdateOptions(
            output=args.output,
            metadata=args.metadata,
            remove=args.remove,
            key_column=args.key_column,
            refresh_metadata=args.refresh_metadata,
            dataset_version=args.dataset_version,
            keep_superseded=args.keep_superseded,
            purge_superseded=args.purge_superseded,
            record_keys=args.record_keys,
            yes=args.yes,
            dry_run=args.dry_run,
            workers=args.workers,
            storage_options=args.storage_options,
        )
    )
    for line in summary.lines:
        print(line)
    return 0


def build(parser_class: Any, prog: str) -> argparse.ArgumentParser:
    p = parser_class(prog=prog, description=UPDATE_DESCRIPTION)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_update_arguments(p)
    p.set_defaults(func=cmd_update)
    return p  # type: ignore[no-any-return]
