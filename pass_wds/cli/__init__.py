"""Command line: a thin argparse package over the library, one module per command group.

``make-shards …`` is the same command as ``pass-wds make-shards …``; ``make-shards update OUT …`` makes a new
revision of an output (:mod:`pass_wds.cli.update`; an input literally named ``update`` is ``./update``). Every
option can come from a YAML file (``--config configs/pass.yaml``); flags given on the command line override it. Exit codes: 0 success,
1 a check failed (e.g. verify found bad shards), 2 bad arguments or an unusable input/output. Command modules
are imported statically; each imports its heavy library code only when its command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pass_wds import __version__
from pass_wds.cli import bench, convert, dataset, fetch, hosting, preview, shuffle, update
from pass_wds.cli.common import Parser, run


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pass-wds", description="PASS → WebDataset shards, verified and streamable.")
    parser.add_argument("--version", action="version", version=f"pass-wds {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in (fetch, convert, dataset, hosting, preview, bench, shuffle):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:  # bare `pass-wds`: what it can do
        build_parser().print_help()
        return 2
    at = _command_at(args)
    if at is not None and args[at : at + 2] == ["make-shards", "update"]:
        return run(update.build(Parser, "pass-wds make-shards update"), args[:at] + args[at + 2 :])
    return run(build_parser(), args)


def _command_at(args: list[str]) -> int | None:
    """Where the command word is (after the global flags)."""
    return next((i for i, a in enumerate(args) if not a.startswith("-")), None)


def make_shards_main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    at = _command_at(args)
    if at is not None and args[at] == "update":
        return run(update.build(Parser, "make-shards update"), args[:at] + args[at + 1 :])
    parser = Parser(
        prog="make-shards",
        description=convert.MAKE_SHARDS_DESCRIPTION,
        epilog="make-shards update OUT (--metadata ALLOWLIST | --remove KEYS_FILE): a new revision of an output "
        "without the removed samples (see make-shards update --help)",
    )
    parser.add_argument("--version", action="version", version=f"make-shards (pass-wds {__version__})")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    convert.add_make_shards_arguments(parser)
    parser.set_defaults(func=convert.cmd_make_shards)
    return run(parser, args)
