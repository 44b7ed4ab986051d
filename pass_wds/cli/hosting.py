"""``pass-wds upload`` and ``pass-wds urls``: host an output on an object store and list its shard URLs."""

from __future__ import annotations

import argparse
from typing import Any

from pass_wds import storage
from pass_wds.cli.common import (
    add_allow_external_urls,
    add_retry_options,
    add_source,
    add_storage_options,
    retry_policy,
    source_arg,
)


def register(sub: Any) -> None:
    add_upload_parser(sub)
    add_urls_parser(sub)


def add_upload_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "upload",
        help="copy a finished local output to S3 or another fsspec store (resumable)",
        description="Copy a finished local make-shards output to URL in parallel: shards, .idx files, "
        "stats.json, errors.jsonl, attribution.csv, then index.json last. Objects already present with the "
        "same sha256 are skipped (read back and hashed); objects pass-wds did not write refuse the upload "
        "unless --overwrite, and are never replaced.",
    )
    p.add_argument("local_out", help="local output folder (contains index.json)")
    p.add_argument("url", help="destination, e.g. s3://bucket/pass-wds/v1")
    p.add_argument("-j", "--workers", type=int, default=8, help="parallel uploads (default: 8)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="after uploading, read every shard back and check it against index.json (size, sha256, tar "
        "structure, sample count: what `pass-wds verify URL` does); objects already there are always compared "
        "by sha256 before being skipped",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different pass-wds dataset at URL, or upload next to foreign objects (never replaced)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar of the bytes sent (default: on a terminal)",
    )
    add_storage_options(p, default={})
    add_retry_options(p)
    p.set_defaults(func=cmd_upload)
    return p


def cmd_upload(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise storage.StorageError(f"--workers must be >= 1, got {args.workers}")
    from pass_wds.hosting import upload

    report = upload(
        args.local_out,
        args.url,
        workers=args.workers,
        storage_options=args.storage_options,
        verify=args.verify,
        overwrite=args.overwrite,
        progress=args.progress,
        retry=retry_policy(args),
    )
    mb = report.bytes_uploaded / 1e6
    checked = f"; verified all {report.verified} shards there" if args.verify else ""
    print(
        f"uploaded {len(report.uploaded)} objects ({mb:,.1f} MB), skipped {len(report.skipped)} already present, "
        f"in {report.seconds:.1f}s → {storage.redact(args.url, args.storage_options)}{checked}"
    )
    return 0


def add_urls_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "urls",
        help="print absolute shard URLs (or brace patterns) of an output",
        description="Print the absolute URL of every shard of an output, one per line, resolved against "
        "--base (where the output is hosted) or the location of index.json.",
    )
    add_source(p)
    p.add_argument("--base", help="resolve shard URLs against this URL instead (e.g. https://host/pass/)")
    p.add_argument("--brace", action="store_true", help="print brace patterns like pass-{000000..000012}.tar")
    add_storage_options(p, default={})
    add_retry_options(p)
    add_allow_external_urls(p)
    p.set_defaults(func=cmd_urls)
    return p


def cmd_urls(args: argparse.Namespace) -> int:
    from pass_wds.hosting import urls

    for u in urls(
        source_arg(args.source),
        base=args.base,
        brace=args.brace,
        storage_options=args.storage_options,
        allow_external_urls=args.allow_external_urls,
        retry=retry_policy(args),
    ):
        print(u)
    return 0
