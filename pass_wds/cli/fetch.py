"""``pass-wds fetch``: download the published PASS archives and metadata (see :mod:`pass_wds.fetch`)."""

from __future__ import annotations

import argparse
from typing import Any

from pass_wds.cli.common import add_storage_options


def cmd_fetch(args: argparse.Namespace) -> int:
    from pass_wds import fetch

    sources = fetch.load_sources(args.sources)
    only = [n for item in args.only or [] for n in item.split(",") if n]
    p = fetch.plan(
        args.dest, sources, base_url=args.base_url, only=only, storage_options=args.storage_options
    )
    where = args.base_url or sources["base_url"]
    print(f"{sources.get('name', 'dataset')} {sources.get('version', '')} from {where}".replace("  ", " "))
    for line in fetch.describe(p):
        print(line, flush=True)
    if args.dry_run:
        print("dry run: nothing downloaded")
        return 0
    fetch.check_space(p)
    for line in fetch.fetch(p, args.storage_options, progress=args.progress):
        print(line)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fetch",
        help="download the published PASS archives and metadata (resumable)",
        description="Download PASS.0.tar … PASS.9.tar and pass_metadata.csv from where the authors publish "
        "them (Zenodo record 6615455) into DEST. Sizes are shown and free space is checked first; an "
        "interrupted download resumes from its .part file (HTTP range requests) when rerun. Alternative "
        "without a local copy: make-shards reads the published URLs directly (see docs/convert.md).",
    )
    p.add_argument("dest", help="folder to download into (created if needed)")
    p.add_argument("--base-url", metavar="URL", help="a mirror serving the same file names")
    p.add_argument(
        "--sources",
        metavar="YAML",
        help="file list with base_url, names, sizes and checksums (default: the shipped pass-source.yaml)",
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME[,NAME]",
        help="download only these files (e.g. --only pass_metadata.csv,PASS.0.tar)",
    )
    p.add_argument("--dry-run", action="store_true", help="show sizes and what is missing; download nothing")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on a terminal)",
    )
    add_storage_options(p, default={})
    p.set_defaults(func=cmd_fetch)
