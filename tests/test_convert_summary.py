"""What the user sees: honest rates after a resume (summary and log lines agree), errors naming the option."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import fakedata as fd
import pytest

MAKE_SHARDS = [sys.executable, "-m", "pass_wds.cli", "make-shards"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> fd.FakePassResult:
    return fd.make_fake_pass(fd.FakePassConfig(out=str(tmp_path_factory.mktemp("raw")), n_images=60, parts=2))


def _args(raw: fd.FakePassResult, out: Path, *extra: str) -> list[str]:
    tars = [str(t) for t in raw.tars]
    return [
        *MAKE_SHARDS,
        *tars,
        "--metadata",
        str(raw.metadata),
        "-o",
        str(out),
        "--shard-size",
        "100KB",
        *extra,
    ]


def test_the_summary_after_a_resume_rates_only_what_this_run_wrote(
    raw: fd.FakePassResult, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = subprocess.run(
        _args(raw, out, "--shard-range", "0:6", "--no-progress"), capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    r = subprocess.run(_args(raw, out, "--no-progress"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = re.search(r"wrote ([\d,]+) samples in (\d+) shards .* in ([\d.]+)s \(([\d,]+) img/s", r.stdout)
    kept = re.search(
        r"kept (\d+) shards \(([\d,]+) samples.*: ([\d,]+) samples in (\d+) shards in all", r.stdout
    )
    assert m and kept, r.stdout
    written, shards, secs, rate = (float(g.replace(",", "")) for g in m.groups())
    kept_shards, kept_samples, total, all_shards = (int(g.replace(",", "")) for g in kept.groups())
    assert kept_shards == 6 and shards == all_shards - 6 > 0
    assert written + kept_samples == total == 60
    # the rate is that of the samples written now, not of everything in the output
    assert abs(rate - written / secs) <= max(1.0, 0.1 * rate), (rate, written, secs)
    # the log's last progress line uses the same definition (samples written now / its elapsed time)
    log = re.findall(r"(\d+)/(\d+) images, (\d+) img/s, [\d.]+ MB/s over ([\d.]+)s", r.stderr)
    assert log, r.stderr
    done, planned, log_rate, elapsed = (float(x) for x in log[-1])
    assert done == planned == 60
    assert abs(log_rate - written / elapsed) <= max(1.0, 0.1 * log_rate), (log_rate, written, elapsed)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--shard-size", "banana", "--shard-size: cannot parse 'banana'"),
        ("--max-count", "0", "--max-count must be >= 1"),
        ("--seed", "x", "argument --seed: invalid int value: 'x'"),
    ],
)
def test_errors_name_the_option(
    raw: fd.FakePassResult, tmp_path: Path, flag: str, value: str, message: str
) -> None:
    out = tmp_path / "out"
    r = subprocess.run(_args(raw, out, flag, value), capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("prog", [["make-shards"], ["pass-wds"]])
def test_both_commands_have_version(prog: list[str]) -> None:
    from pass_wds import __version__

    module = (
        "from pass_wds.cli import make_shards_main as m"
        if prog == ["make-shards"]
        else "from pass_wds.cli import main as m"
    )
    r = subprocess.run(
        [sys.executable, "-c", f"{module}; raise SystemExit(m(['--version']))"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and __version__ in r.stdout and prog[0] in r.stdout, r.stdout + r.stderr
