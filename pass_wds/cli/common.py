"""What every command shares: one-line usage errors, ``--storage-options``, and running a command so that a
user's mistake is one line and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pass_wds import storage
from pass_wds.errors import PassWdsError, did_you_mean
from pass_wds.storage.log import redacting_filter

SOURCE_HELP = (
    "dataset source: an output folder or bucket prefix, its index.json, a glob ('out/*.tar'), a brace pattern "
    "('out/pass-{000000..000009}.tar') or shard URLs; several may be given"
)


def add_source(p: argparse.ArgumentParser, dest: str = "source") -> None:
    """The positional SOURCE of every command that reads a dataset (see :mod:`pass_wds.dataset`)."""
    p.add_argument(dest, nargs="+", metavar="SOURCE", help=SOURCE_HELP)


def source_arg(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (and still exit code 2), with the closest
    option or choice when the mistake looks like a typo (``--metdata``: did you mean --metadata?)."""

    def error(self, message: str) -> NoReturn:
        m = _INVALID_CHOICE.search(message)
        if m:
            message += did_you_mean(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:  # as argparse says it, plus the option of the command that was probably meant
            options = [s for a in self._command(ns)._actions for s in a.option_strings if s.startswith("--")]
            hint = next(
                (
                    h
                    for e in extras
                    if e.startswith("--") and (h := did_you_mean(e.split("=", 1)[0], options))
                ),
                "",
            )
            self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return ns

    def _command(self, ns: Any) -> argparse.ArgumentParser:
        """The (sub)command parser that read these arguments, whose options a typo is compared with."""
        parser: argparse.ArgumentParser = self
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and getattr(ns, action.dest or "", None):
                sub = action.choices.get(getattr(ns, action.dest))
                if isinstance(sub, Parser):
                    return sub._command(ns)
        return parser


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


def _seconds(positive: bool) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if value < 0 or positive and value == 0 or value != value:
            raise argparse.ArgumentTypeError(f"must be {'> 0' if positive else '>= 0'} seconds, got {text}")
        return value

    return parse


def add_retry_options(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """``--retry-seconds`` and ``--read-timeout``: the retry policy of every remote read the command makes
    (``suppress``: only a flag actually given sets a value, so a YAML config can set it too)."""
    from pass_wds.storage.retry import READ_TIMEOUT, RETRY_SECONDS

    p.add_argument(
        "--retry-seconds",
        type=_seconds(False),
        default=argparse.SUPPRESS if suppress else RETRY_SECONDS,
        metavar="S",
        help="retry transient storage failures (refused or reset connections, timeouts, 5xx, 429, SlowDown) for "
        f"up to S seconds without progress before giving up; 0: never (default: {RETRY_SECONDS:g})",
    )
    p.add_argument(
        "--read-timeout",
        type=_seconds(True),
        default=argparse.SUPPRESS if suppress else READ_TIMEOUT,
        metavar="S",
        help=f"a request that gets no answer or byte for S seconds is a failed try (default: {READ_TIMEOUT:g})",
    )


def retry_policy(args: argparse.Namespace) -> storage.RetryPolicy:
    """The retry policy of ``--retry-seconds`` / ``--read-timeout``."""
    return storage.RetryPolicy.of(getattr(args, "retry_seconds", None), getattr(args, "read_timeout", None))


def add_allow_external_urls(p: argparse.ArgumentParser) -> None:
    """``--allow-external-urls``: trust an index.json that names shards outside its own folder."""
    p.add_argument(
        "--allow-external-urls",
        action="store_true",
        help="trust an index.json that lists absolute shard URLs or paths outside its own folder "
        "(refused by default; see docs/security.md)",
    )


def add_allow_raw_archives(p: argparse.ArgumentParser) -> None:
    """``--allow-raw-archives``: read shards that look like raw image archives (refused by default)."""
    p.add_argument(
        "--allow-raw-archives",
        action="store_true",
        help="read tar files that look like raw image archives (lone images under folders, no sample JSON) "
        "as shards; without it they are refused, since PASS's own tars are not the dataset (run make-shards)",
    )


def print_result(result: Any, json_path: str | None) -> None:
    """Print a result's ``lines()`` (flushed one by one) and, with ``--json FILE``, write its ``to_dict()``."""
    for line in result.lines():
        print(line, flush=True)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result.to_dict(), f, indent=2)
            f.write("\n")


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format=f"[{parser.prog}] %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # our own lines are the ones users act on
    so = getattr(args, "storage_options", None)
    for handler in logging.getLogger().handlers:  # nothing this process (or its forks) logs may show them
        handler.addFilter(redacting_filter(so))
    try:
        rc = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return rc
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except PassWdsError as e:  # every error a user can act on: one line (exit 2; an engine failure exits 1)
        return _fail(parser.prog, e, storage.redact(str(e), so), e.exit_code)
    except OSError as e:  # the machine, not the program: a full disk, a read-only or failing device
        return _fail(parser.prog, e, _os_error(e), 2)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: the traceback follows (recorded first, see _fail)
        _record(parser.prog, e, str(e), 1)
        raise


ERROR_LOG = "PASS_WDS_ERROR_LOG"
"""When set, every error the CLI reports is appended to this file as one JSON line (type, lines, exit code):
the test suite checks that each one it provokes is a single line from a :class:`PassWdsError`."""


def _fail(prog: str, error: BaseException, line: str, rc: int) -> int:
    print(f"{prog}: error: {line}", file=sys.stderr)
    _record(prog, error, line, rc)
    return rc


def _record(prog: str, error: BaseException, line: str, rc: int) -> None:
    path = os.environ.get(ERROR_LOG)
    if not path:
        return
    entry = {
        "prog": prog,
        "type": f"{type(error).__module__}.{type(error).__qualname__}",
        "root": isinstance(error, PassWdsError),
        "errno": getattr(error, "errno", None),
        "lines": len(line.splitlines()) or 1,
        "rc": rc,
        "message": line[:300],
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _os_error(e: OSError) -> str:
    """One line for an operating-system error: what failed, where, and what to do about a full disk."""
    where = f": {storage.redact(str(e.filename))}" if e.filename else ""
    text = f"{e.strerror or storage.redact(str(e))}{where}"
    if e.errno in _OUT_OF_SPACE:
        text += "; temporary files were removed: free some space and rerun the same command to resume"
    return text


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``| head``): stop quietly, as ``cat`` does (exit 128 + SIGPIPE).

    stdout is pointed at /dev/null so that the interpreter's final flush does not complain a second time.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured in a test): nothing to flush into
        pass
    return 141
