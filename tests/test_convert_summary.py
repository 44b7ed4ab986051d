"""What the user sees: honest rates after a resume (summary and log lines agree), errors naming the option."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FakeOutputs

from pass_wds import fakedata as fd

MAKE_SHARDS = [sys.executable, "-m", "pass_wds.cli", "make-shards"]


@pytest.fixture(scope="module")
def raw(fake_outputs: FakeOutputs) -> fd.FakePassResult:
    return fake_outputs.raw(n_images=60)


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
    assert _consistent(rate, written, secs), (rate, written, secs)
    # the log's last progress line uses the same definition (samples written now / its elapsed time)
    log = re.findall(r"(\d+)/(\d+) images, (\d+) img/s, [\d.]+ MB/s over ([\d.]+)s", r.stderr)
    assert log, r.stderr
    done, planned, log_rate, elapsed = (float(x) for x in log[-1])
    assert done == planned == 60
    assert _consistent(log_rate, written, elapsed), (log_rate, written, elapsed)


def _consistent(rate: float, samples: float, secs: float) -> bool:
    """``rate`` (printed as an integer) is ``samples / secs`` (printed with one decimal), up to rounding."""
    lo, hi = samples / (secs + 0.05), samples / max(secs - 0.05, 1e-3)
    return lo - 1 <= rate <= hi + 1


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


def test_the_bar_rates_what_this_run_writes_as_the_log_does(raw: fd.FakePassResult, tmp_path: Path) -> None:
    """img/s over MB/s cancels the elapsed time: it must be samples written now over MB written now."""
    out = tmp_path / "out"
    first = subprocess.run(
        _args(raw, out, "--shard-range", "0:3", "--no-progress"), capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    r = subprocess.run(_args(raw, out, "--progress"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = re.search(r"wrote ([\d,]+) samples in \d+ shards \(([\d,.]+) MB\)", r.stdout)
    assert m and "kept 3 shards" in r.stdout, r.stdout
    written, mb = (float(g.replace(",", "")) for g in m.groups())
    last = [seg for seg in re.split(r"[\r\n]", r.stderr) if "img/s" in seg][-1]
    rate = re.search(r"([\d.]+)([kMG]?)img/s", last)
    mbps = re.search(r"MBps=([\d.]+)", last)
    assert rate and mbps and re.search(r"shards=(\d+)/\1\b", last), last
    img_s = float(rate.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[rate.group(2)]
    assert abs(img_s / float(mbps.group(1)) - written / mb) <= 0.15 * written / mb, (last, written, mb)


def test_make_shards_library_entry_point(raw: fd.FakePassResult, tmp_path: Path) -> None:
    """``pass_wds.make_shards`` takes a ConvertConfig or keyword options (a string input is one input), and
    keyword options override a config; both give the bytes the CLI gives. An unknown option is one line."""
    import json

    import pass_wds
    from pass_wds.config import ConfigError

    tars = [str(t) for t in raw.tars]
    by_cli = tmp_path / "cli"
    subprocess.run(_args(raw, by_cli, "--no-progress"), check=True, capture_output=True)
    by_kwargs = tmp_path / "kwargs"
    summary = pass_wds.make_shards(
        inputs=tars, metadata=str(raw.metadata), output=str(by_kwargs), shard_size="100KB", progress=False
    )
    assert summary.samples == 60 and (by_kwargs / "index.json").is_file()
    base = pass_wds.ConvertConfig(inputs=tars, metadata=str(raw.metadata), output="elsewhere", seed=3)
    by_config = tmp_path / "config"
    pass_wds.make_shards(base, output=str(by_config), shard_size="100KB", seed=0, progress=False)
    assert base.output == "elsewhere" and base.seed == 3  # the caller's config is not changed

    def shards(out: Path) -> list[tuple[str, str]]:
        return [(e["url"], e["sha256"]) for e in json.loads((out / "index.json").read_text())["shardlist"]]

    assert shards(by_cli) == shards(by_kwargs) == shards(by_config)
    one = tmp_path / "one"
    pass_wds.make_shards(
        inputs=tars[0],
        metadata=str(raw.metadata),
        output=str(one),
        allow_missing_metadata=True,
        progress=False,
    )
    assert json.loads((one / "index.json").read_text())["config"]["inputs"] == [tars[0]]
    with pytest.raises(ConfigError, match=r"^unknown option\(s\) in make_shards\(\): shard_sise$"):
        pass_wds.make_shards(inputs=tars, output=str(tmp_path / "x"), shard_sise="1MB")
    assert not (tmp_path / "x").exists()
