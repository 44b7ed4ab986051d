"""One root error (issue 17 item 4): every error a user can act on is a ``PassWdsError`` of a few kinds, and
the CLI turns the root into one line and an exit code. (Every CLI error path the suite exercises is checked
by the autouse fixture ``cli_errors_are_one_line_from_the_root`` in conftest.py.)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import pass_wds
from pass_wds.cli.common import ERROR_LOG, Parser, run
from pass_wds.convert.executors import EngineError
from pass_wds.decoding import DecodeError
from pass_wds.errors import ConfigError, InputError, PassWdsError, first_line
from pass_wds.format.errors import ShardError
from pass_wds.format.manifest import ManifestError, ManifestNotFoundError
from pass_wds.loading.pipeline import SampleError
from pass_wds.storage import StorageError, StorageNotFoundError


def test_every_kind_is_a_pass_wds_error() -> None:
    kinds = [ConfigError, InputError, StorageError, ShardError, DecodeError, EngineError]
    assert all(issubclass(k, PassWdsError) for k in kinds)
    assert issubclass(ManifestError, ShardError) and issubclass(SampleError, DecodeError)
    # the builtin each kind was before stays a base, so `except ValueError` / `except FileNotFoundError` work
    assert issubclass(ConfigError, ValueError) and issubclass(InputError, ValueError)
    assert issubclass(ManifestNotFoundError, FileNotFoundError)
    assert issubclass(StorageNotFoundError, FileNotFoundError)
    assert not issubclass(InputError, ConfigError)  # bad data is not a bad option
    assert pass_wds.PassWdsError is PassWdsError and pass_wds.StorageError is StorageError
    assert pass_wds.ShardError is ShardError and pass_wds.InputError is InputError


def test_errors_survive_pickling() -> None:
    import pickle

    for e in (DecodeError("corrupt", "x"), SampleError("sample 'k' of u: DecodeError: corrupt: x")):
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is type(e) and str(again) == str(e) and again.reason == e.reason


def test_first_line() -> None:
    assert first_line(ValueError("a\nb")) == "a"
    assert first_line(ValueError("  \n")) == "ValueError"


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> tuple[int, list[dict]]:  # type: ignore[type-arg]
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(ERROR_LOG, str(log))
    parser = Parser(prog="t")

    def fail(args: argparse.Namespace) -> int:
        raise error

    parser.set_defaults(func=fail)
    rc = run(parser, [])
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    log.unlink()
    return rc, entries


@pytest.mark.parametrize(
    "error,rc",
    [
        (ConfigError("--seed must be >= 0, got -1"), 2),
        (InputError("metadata m.csv line 3: 4 fields, the header has 3"), 2),
        (StorageError("s3://b/x: access denied"), 2),
        (ManifestError("index.json: shardlist[0].url leaves the dataset folder"), 2),
        (EngineError("lost the Dask scheduler at tcp://127.0.0.1:1; rerun the same command to resume"), 1),
    ],
)
def test_the_cli_catches_the_root(
    error: PassWdsError,
    rc: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    got, entries = _cli(tmp_path, monkeypatch, error)
    err = capsys.readouterr().err
    assert got == rc and err == f"t: error: {error}\n"
    assert entries == [
        {
            "prog": "t",
            "type": f"{type(error).__module__}.{type(error).__qualname__}",
            "root": True,
            "errno": None,
            "lines": 1,
            "rc": rc,
            "message": str(error),
        }
    ]


def test_a_bug_is_recorded_and_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the conftest check would flag: an exception outside the root reaching the CLI."""
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(ERROR_LOG, str(log))
    parser = Parser(prog="t")
    parser.set_defaults(func=lambda args: {}["missing"])
    with pytest.raises(KeyError):
        run(parser, [])
    (entry,) = [json.loads(x) for x in log.read_text().splitlines()]
    log.unlink()  # the autouse check would (rightly) fail this test otherwise
    assert entry["root"] is False and entry["type"] == "builtins.KeyError"
