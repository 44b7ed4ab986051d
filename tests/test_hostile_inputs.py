"""Inputs that are not what they claim, and a disk that fills up: a reported rejection or one clean line,
never the end of a run halfway and never a traceback (issue 9, item 2)."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tmpfs
from PIL import Image

from pass_wds.cli import make_shards_main
from pass_wds.format import reasons

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parent.parent


def _jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 40 + seed).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _errors(out: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]


def _samples(out: Path) -> set[str]:
    names: set[str] = set()
    for shard in out.glob("*.tar"):
        with tarfile.open(shard) as tf:
            names |= {m.name.rsplit(".", 1)[0] for m in tf.getmembers()}
    return names


def _make_shards(*args: str | Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = make_shards_main([str(a) for a in (*args, "--allow-missing-metadata", "--no-progress")])
    return rc, err.getvalue()


def test_gzip_named_tar_is_a_rejection(tmp_path: Path) -> None:
    good = _tar(tmp_path / "PASS.0.tar", {"a.jpg": _jpeg(1), "b.jpg": _jpeg(2)})
    inner = _tar(tmp_path / "inner.tar", {"c.jpg": _jpeg(3)}).read_bytes()
    (tmp_path / "PASS.1.tar").write_bytes(gzip.compress(inner))
    (tmp_path / "PASS.2.tar").write_bytes(b"")
    out = tmp_path / "out"
    rc, err = _make_shards(good, tmp_path / "PASS.1.tar", tmp_path / "PASS.2.tar", "-o", out)
    assert rc == 0, err
    assert _samples(out) == {"a", "b"}
    by_source = {e["source"]: e for e in _errors(out)}
    assert by_source["PASS.1.tar"]["reason"] == reasons.CORRUPT
    assert "gzip" in by_source["PASS.1.tar"]["detail"]
    assert by_source["PASS.2.tar"]["reason"] == reasons.CORRUPT


def test_fifo_input_never_blocks(tmp_path: Path) -> None:
    good = _tar(tmp_path / "PASS.0.tar", {"a.jpg": _jpeg(1)})
    os.mkfifo(tmp_path / "PASS.1.tar")  # opening it would wait for a writer forever
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(_jpeg(4))
    os.mkfifo(folder / "y.jpg")
    out = tmp_path / "out"
    rc, err = _make_shards(good, tmp_path / "PASS.1.tar", folder, "-o", out)
    assert rc == 0, err
    assert _samples(out) == {"a", "x"}
    assert sorted(e["reason"] for e in _errors(out)) == [reasons.NOT_REGULAR] * 2


@pytest.mark.parametrize("option", [["--resize-max-side", "16"], ["--quality", "80"]])
def test_image_failing_only_when_reencoded_is_rejected(option: list[str], tmp_path: Path) -> None:
    """``--no-validate`` trusts the header; re-encoding then decodes a truncated JPEG: a rejection."""
    whole = _jpeg(5, (256, 192))
    src = _tar(tmp_path / "PASS.0.tar", {"ok.jpg": _jpeg(6), "cut.jpg": whole[: len(whole) // 3]})
    out = tmp_path / "out"
    rc, err = _make_shards(src, "-o", out, "--no-validate", *option)
    assert rc == 0 and "Traceback" not in err, err
    assert _samples(out) == {"ok"}
    assert [(e["key"], e["reason"]) for e in _errors(out)] == [("cut", reasons.CORRUPT)]


def _without_dac_override() -> list[str]:
    """Root reads any file: drop the capabilities that allow it, so mode 000 really is unreadable."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_unreadable_file_in_folder_is_a_read_error(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        (folder / f"k{i}.jpg").write_bytes(_jpeg(i))
    (folder / "k1.jpg").chmod(0)
    out = tmp_path / "out"
    cmd = [*_without_dac_override(), sys.executable, "-m", "pass_wds.cli", "make-shards"]
    r = subprocess.run(
        [*cmd, str(folder), "-o", str(out), "--allow-missing-metadata", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert _samples(out) == {"k0", "k2"}
    [e] = _errors(out)
    assert (e["key"], e["reason"]) == ("k1", reasons.READ_ERROR)
    assert "ermission denied" in e["detail"]


# ------------------------------------------------------------------------------------------ disk full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB tmpfs: writes beyond it fail with ENOSPC, as on a full disk."""
    with tmpfs(tmp_path / "disk", "2m") as mnt:
        yield mnt


def test_disk_full_is_one_line_then_resumes(small_disk: Path, tmp_path: Path) -> None:
    members = {f"img{i:03d}.jpg": _jpeg(i, (320, 240)) for i in range(60)}  # ~3.5 MB of noise JPEGs
    src = _tar(tmp_path / "PASS.0.tar", members)
    assert src.stat().st_size > 3 << 20
    out = small_disk / "out"
    rc, err = _make_shards(src, "-o", out, "--shard-size", "400KB")
    lines = err.strip().splitlines()
    assert rc == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("make-shards: error: ") and "No space left" in lines[-1], err
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # temp files removed
    kept = sorted(p.name for p in out.glob("*.tar"))
    assert kept  # some shards were complete before the disk filled up
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    rc, err = _make_shards(src, "-o", out, "--shard-size", "400KB")
    assert rc == 0, err
    assert _samples(out) == {n.removesuffix(".jpg") for n in members}
    from pass_wds.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["verify", str(out)]) == 0
