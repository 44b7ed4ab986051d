"""Command line: a thin argparse layer over the library.

``make-shards …`` is the same command as ``pass-wds make-shards …``. Every option can come from a YAML file
(``--config configs/pass.yaml``); flags given on the command line override it. Exit codes: 0 success,
1 a check failed (e.g. verify found bad shards), 2 bad arguments or an unusable input/output.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pass_wds import __version__, executors, storage
from pass_wds.config import ConfigError, ConvertConfig, from_dict, load_yaml


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (and still exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_storage_options(p: argparse.ArgumentParser, *, default: Any = argparse.SUPPRESS) -> None:
    """``--storage-options JSON`` (passed to fsspec), shared by every subcommand that touches storage."""
    p.add_argument(
        "--storage-options",
        type=_json_object,
        default=default,
        metavar="JSON",
        help='fsspec storage options as JSON, e.g. \'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\' '
        "(standard AWS environment variables and profiles work without it)",
    )


# --------------------------------------------------------------------------------------------- make-shards

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
    add_storage_options(p)


def config_from_args(args: argparse.Namespace) -> ConvertConfig:
    values: dict[str, Any] = load_yaml(args.config) if getattr(args, "config", None) else {}
    cli = {k: v for k, v in vars(args).items() if k not in ("config", "func", "command", "verbose")}
    values.update(cli)
    cfg = from_dict(ConvertConfig, values, source=args.config or "options")
    if isinstance(cfg.inputs, str):
        cfg.inputs = [cfg.inputs]
    return cfg


def cmd_make_shards(args: argparse.Namespace) -> int:
    from pass_wds.convert import run

    cfg = config_from_args(args)
    if cfg.scheduler or cfg.cluster:
        executors.check(cfg)  # one line when the dask extra is missing
        import distributed  # noqa: F401  (its import sets its loggers' levels: quiet them after it)

        # the client logs tracebacks when a scheduler or worker goes away; ours is the one line users act on
        for name in list(logging.root.manager.loggerDict):
            if name.split(".")[0] in ("distributed", "tornado"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    summary = run(cfg)
    for line in summary.lines():
        print(line)
    return 0


# --------------------------------------------------------------------------------------------- verify / inspect


def cmd_verify(args: argparse.Namespace) -> int:
    from pass_wds import manifest

    so = getattr(args, "storage_options", {})

    def report(check: manifest.ShardCheck) -> None:
        if not check.ok:
            print(f"BAD {storage.redact(check.url)}: {'; '.join(check.problems)}", flush=True)

    checks = manifest.verify(args.output, so, workers=args.workers, on_shard=report)
    bad = [c for c in checks if not c.ok]
    if bad:
        print(f"{len(bad)} of {len(checks)} shards failed verification", file=sys.stderr)
        return 1
    print(f"all {len(checks)} shards ok (size, sha256, tar structure, sample count, .idx)")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pass_wds import manifest

    so = getattr(args, "storage_options", {})
    if args.sample:
        meta = manifest.find_sample(args.output, args.sample, so)
        if meta is None:
            print(f"no sample with key {args.sample!r}", file=sys.stderr)
            return 1
        print(json.dumps(meta, indent=2, ensure_ascii=False))
        return 0
    print(manifest.summarize(args.output, so))
    return 0


# ------------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pass-wds", description="PASS → WebDataset shards, verified and streamable.")
    parser.add_argument("--version", action="version", version=f"pass-wds {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "make-shards",
        help="convert raw images + metadata into WebDataset shards",
        description=MAKE_SHARDS_DESCRIPTION,
    )
    add_make_shards_arguments(p)
    p.set_defaults(func=cmd_make_shards)

    p = sub.add_parser(
        "verify",
        help="re-check every shard against index.json",
        description="Re-check every shard against index.json: size, sha256, tar structure, "
        "sample count and .idx. Exits 1 naming each bad shard.",
    )
    p.add_argument("output", help="output folder/URL or its index.json")
    p.add_argument("-j", "--workers", type=int, default=4, help="shards checked in parallel (default: 4)")
    add_storage_options(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "inspect",
        help="summarise an output, or print one sample's metadata",
        description="Print shards, samples, bytes, balance and rejected inputs of an output.",
    )
    p.add_argument("output", help="output folder/URL or its index.json")
    p.add_argument("--sample", metavar="KEY", help="print the JSON metadata of the sample with this key")
    add_storage_options(p)
    p.set_defaults(func=cmd_inspect)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[Any], None]]:
    """Subcommands that live beside their stage (upload/urls in hosting, bench in bench)."""
    found: list[Callable[[Any], None]] = []
    for module, names in (
        ("pass_wds.hosting", ("add_upload_parser", "add_urls_parser")),
        ("pass_wds.bench", ("add_bench_parser",)),
    ):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        found.extend(getattr(mod, n) for n in names if hasattr(mod, n))
    return found


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format=f"[{parser.prog}] %(message)s",
        stream=sys.stderr,
    )
    for noisy in (
        "botocore",
        "aiobotocore",
        "s3fs",
        "fsspec",
        "urllib3",
        "asyncio",
        "distributed",
        "tornado",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # our own lines are the ones users act on
    try:
        return int(args.func(args))
    except (ConfigError, storage.StorageError) as e:
        print(f"{parser.prog}: error: {storage.redact(str(e))}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"{parser.prog}: error: {storage.redact(str(e))}", file=sys.stderr)
        return 2
    except executors.EngineError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return _run(build_parser(), argv)


def make_shards_main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="make-shards", description=MAKE_SHARDS_DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_make_shards_arguments(parser)
    parser.set_defaults(func=cmd_make_shards)
    return _run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
