"""verify and inspect: a shard is checked against its manifest entry and its ``.idx`` against its own headers."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import FakeOutputs

from pass_wds import verify
from pass_wds.format import manifest

PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]


@pytest.fixture(scope="module")
def out(fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.small_output("250KB")


def _copy(out: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "out"
    shutil.copytree(out, dst)
    return dst


def test_a_fresh_output_verifies(out: Path) -> None:
    checks = verify.verify(str(out))
    assert checks and all(c.ok for c in checks), [c.problems for c in checks if not c.ok]


def test_swapped_names_in_an_idx_are_caught(out: Path, tmp_path: Path) -> None:
    """Same sample count, same sizes, two names swapped: the loader would deliver wrong keys."""
    broken = _copy(out, tmp_path)
    entry = manifest.load_index(str(broken))["shardlist"][0]
    idx = broken / entry["idx"]
    head, first, second, *rest = idx.read_text().splitlines()
    name1, name2 = first.split()[3].split(".")[0], second.split()[3].split(".")[0]
    first2 = first.replace(name1, name2)
    second2 = second.replace(name2, name1)
    idx.write_text("\n".join([head, first2, second2, *rest]) + "\n")
    checks = {c.url.rsplit("/", 1)[-1]: c for c in verify.verify(str(broken))}
    bad = checks[entry["url"]]
    assert not bad.ok and any("does not match the tar's headers" in p for p in bad.problems), bad.problems
    assert all(c.ok for name, c in checks.items() if name != entry["url"])


def test_shifted_offsets_in_an_idx_are_caught(out: Path, tmp_path: Path) -> None:
    broken = _copy(out, tmp_path)
    entry = manifest.load_index(str(broken))["shardlist"][1]
    idx = broken / entry["idx"]
    lines = idx.read_text().splitlines()
    tok = lines[2].split()
    tok[1] = str(int(tok[1]) + 512)
    lines[2] = " ".join(tok)
    idx.write_text("\n".join(lines) + "\n")
    bad = [c for c in verify.verify(str(broken)) if not c.ok]
    assert [c.url.rsplit("/", 1)[-1] for c in bad] == [entry["url"]]


def test_verify_cli_starts_without_torch(out: Path) -> None:
    """verify/inspect/urls import only the format and storage layers (issue: 3 s start-up with torch)."""
    code = (
        "import sys, runpy; sys.argv = ['pass-wds', 'verify', sys.argv[1]];"
        "from pass_wds.cli import main; rc = main(sys.argv[1:]);"
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "shards ok" in res.stdout
    for cmd in (["inspect", str(out)], ["urls", str(out)]):
        code2 = code.replace("'verify', sys.argv[1]", repr(cmd[0]) + ", sys.argv[1]")
        res = subprocess.run(
            [sys.executable, "-c", code2, str(out)], capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stderr


def test_a_shard_shorter_than_its_idx_is_reported_not_a_traceback(out: Path, tmp_path: Path) -> None:
    """A valid tar with fewer samples than its .idx lists (a shard cut down and re-closed)."""
    broken = _copy(out, tmp_path)
    entry = manifest.load_index(str(broken))["shardlist"][0]
    shard = broken / entry["url"]
    with tarfile.open(shard) as src:
        first = src.getmembers()[:2]  # one sample: image + json
        data = [(m, src.extractfile(m).read()) for m in first]  # type: ignore[union-attr]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as dst:
        for m, payload in data:
            dst.addfile(m, io.BytesIO(payload))
    res = subprocess.run([*PASS_WDS, "verify", str(broken)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert entry["url"] in res.stdout and "does not match the tar's headers" in res.stdout, res.stdout
