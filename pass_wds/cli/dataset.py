"""``pass-wds verify`` and ``pass-wds inspect``: check and summarise an output (no torch import)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pass_wds import storage
from pass_wds.cli.common import (
    add_allow_external_urls,
    add_allow_raw_archives,
    add_retry_options,
    add_source,
    add_storage_options,
    retry_policy,
    source_arg,
)


def cmd_verify(args: argparse.Namespace) -> int:
    from pass_wds import verify

    so = getattr(args, "storage_options", {})

    def report(check: verify.ShardCheck) -> None:
        if not check.ok:
            print(f"BAD {storage.redact(check.url)}: {'; '.join(check.problems)}", flush=True)

    checks = verify.verify(
        source_arg(args.output),
        so,
        workers=args.workers,
        on_shard=report,
        allow_external_urls=args.allow_external_urls,
        allow_raw_archives=args.allow_raw_archives,
        retry=retry_policy(args),
    )
    bad = [c for c in checks if not c.ok]
    if bad:
        print(f"{len(bad)} of {len(checks)} shards failed verification", file=sys.stderr)
        return 1
    if all(c.manifest for c in checks):
        print(f"all {len(checks)} shards ok (size, sha256, tar structure, sample count, .idx)")
    else:
        print(
            f"all {len(checks)} shards ok (tar structure, .idx; no index.json, so no size or sha256 to compare)"
        )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pass_wds import verify

    so = getattr(args, "storage_options", {})
    if args.sample:
        found = verify.lookup_sample(
            source_arg(args.output),
            args.sample,
            so,
            allow_external_urls=args.allow_external_urls,
            allow_raw_archives=args.allow_raw_archives,
            retry=retry_policy(args),
        )
        if found.meta is None:
            print(found.message(), file=sys.stderr)
            return 1
        print(json.dumps(found.meta, indent=2, ensure_ascii=False))
        return 0
    print(
        verify.summarize(
            source_arg(args.output),
            so,
            allow_external_urls=args.allow_external_urls,
            allow_raw_archives=args.allow_raw_archives,
            retry=retry_policy(args),
        )
    )
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from pass_wds.diff import diff

    result = diff(args.old, args.new, getattr(args, "storage_options", {}), threads=args.workers)
    for line in result.lines(keys=not args.summary):
        print(line)
    return 0 if result.same else 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="re-check every shard against index.json",
        description="Re-check every shard against index.json: size, sha256, tar structure, "
        "sample count and .idx. Exits 1 naming each bad shard.",
    )
    add_source(p, "output")
    p.add_argument("-j", "--workers", type=int, default=4, help="shards checked in parallel (default: 4)")
    add_storage_options(p)
    add_retry_options(p)
    add_allow_external_urls(p)
    add_allow_raw_archives(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "inspect",
        help="summarise an output, or print one sample's metadata",
        description="Print shards, samples, bytes, balance and rejected inputs of an output.",
    )
    add_source(p, "output")
    p.add_argument(
        "--sample",
        metavar="KEY",
        help="print the JSON metadata of the sample with this key, a unique key prefix, or its original file "
        "name (abc.jpeg); a rejected input shows its reason from errors.jsonl",
    )
    add_storage_options(p)
    add_retry_options(p)
    add_allow_external_urls(p)
    add_allow_raw_archives(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "diff",
        help="list the keys two outputs (or two revisions' index.json) add, remove and change",
        description="Compare two outputs, or two revisions' index.json: keys added (+), removed (-) and changed "
        "(~: another JSON member, hence metadata or image). Exit 0 when they hold the same samples, 1 otherwise.",
    )
    p.add_argument("old", metavar="OLD", help="the older output folder/URL or its index.json")
    p.add_argument("new", metavar="NEW", help="the newer output folder/URL or its index.json")
    p.add_argument("--summary", action="store_true", help="print the counts only, not the keys")
    p.add_argument("-j", "--workers", type=int, default=16, help="parallel reads (default: 16)")
    add_storage_options(p)
    p.set_defaults(func=cmd_diff)
