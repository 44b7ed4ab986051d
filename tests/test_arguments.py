"""Every argument is checked before work starts (issue 9, item 8): a bad value is exit 2 with one line naming
the option, and no archive has been read yet (at PASS scale the listing alone reads 187 GB)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image
from servers import HttpServer

from pass_wds.cli import make_shards_main

pytestmark = pytest.mark.timeout(60)


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((40, 30), 30 + seed).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def served(http_server: HttpServer) -> tuple[HttpServer, str]:
    """A raw archive behind a real HTTP server that records every request: listing it is a GET."""
    with tarfile.open(http_server.root / "PASS.0.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(6):
            data = _jpeg(i)
            info = tarfile.TarInfo(f"k{i}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return http_server, f"{http_server.url}/PASS.0.tar"


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = make_shards_main(argv)
    return rc, err.getvalue()


BAD_OPTIONS = [
    (["--seed", "-1"], "--seed"),
    (["--max-image-pixels", "-5"], "--max-image-pixels"),
    (["--max-image-pixels", "0"], "--max-image-pixels"),
    (["--max-count", "0"], "--max-count"),
    (["--quality", "101"], "--quality"),
    (["--shard-size", "0"], "--shard-size"),
    (["--shard-range", "5:2"], "--shard-range"),
    (["--name", "../x"], "--name"),
    (["--workers", "0"], "--workers"),
    (["--resize-max-side", "-3"], "--resize-max-side"),
]


@pytest.mark.parametrize("extra,option", BAD_OPTIONS, ids=[o for _, o in BAD_OPTIONS])
def test_bad_option_refused_before_listing(
    extra: list[str], option: str, served: tuple[HttpServer, str], tmp_path: Path
) -> None:
    server, url = served
    rc, err = _run([url, "-o", str(tmp_path / "out"), "--allow-missing-metadata", *extra])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and option in lines[0], err
    assert server.gets("PASS.0.tar") == []  # the archive was never read
    assert not (tmp_path / "out").exists()


YAML_CASES = [
    ("seed: abc", "seed"),
    ("seed: 1.5", "seed"),
    ("workers: true", "workers"),
    ("validate: 'no'", "validate"),
    ("inputs: 5", "inputs"),
    ("inputs: [1, 2]", "inputs"),
    ("shard_size: [256MB]", "shard_size"),
    ("storage_options: not-a-mapping", "storage_options"),
    ("max_image_pixels: many", "max_image_pixels"),
    ("progress: 3", "progress"),
    ("metadata: {a: 1}", "metadata"),
]


@pytest.mark.parametrize("line,option", YAML_CASES, ids=[c for c, _ in YAML_CASES])
def test_yaml_value_of_wrong_type(
    line: str, option: str, served: tuple[HttpServer, str], tmp_path: Path
) -> None:
    server, url = served
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"allow_missing_metadata: true\noutput: {tmp_path / 'out'}\n{line}\n")
    argv = ["--config", str(cfg)] + ([] if line.startswith("inputs") else [url])
    rc, err = _run(argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert option.replace("_", "-") in lines[0] or option in lines[0], lines[0]
    assert server.gets("PASS.0.tar") == []


def test_yaml_size_as_a_number_is_fine(served: tuple[HttpServer, str], tmp_path: Path) -> None:
    _, url = served
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"allow_missing_metadata: true\nshard_size: 100000\nseed: 7\noutput: {tmp_path / 'o'}\n")
    rc, err = _run(["--config", str(cfg), url, "--no-progress"])
    assert rc == 0, err


def test_read_only_output_refused_before_listing(served: tuple[HttpServer, str], tmp_path: Path) -> None:
    server, url = served
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        rc, err = _run([url, "-o", str(ro / "out"), "--allow-missing-metadata"])
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and "not writable" in lines[0], err
        assert server.gets("PASS.0.tar") == []
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_foreign_output_refused_before_listing(served: tuple[HttpServer, str], tmp_path: Path) -> None:
    server, url = served
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc, err = _run([url, "-o", str(out), "--allow-missing-metadata"])
    assert rc == 2 and "notes.txt" in err
    assert server.gets("PASS.0.tar") == []


def test_server_ignoring_range_is_one_clear_line(served: tuple[HttpServer, str], tmp_path: Path) -> None:
    """A server that answers every Range request with the whole file (200): the archive still lists (one
    streaming read), but images inside it are read by range, so the run ends with one line saying so, not a
    traceback and not every image quietly rejected."""
    server, url = served
    server.ignore_ranges = True
    rc, err = _run([url, "-o", str(tmp_path / "out"), "--allow-missing-metadata", "--no-progress"])
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert rc == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and "ignores HTTP Range" in lines[0], err
    assert not (tmp_path / "out" / "index.json").exists()


@pytest.mark.parametrize(
    "argv",
    [["make-shards", "--help"], ["urls", "{out}"], ["inspect", "{out}"], ["verify", "{out}"]],
    ids=lambda a: a[0],
)
def test_piping_into_head_exits_quietly(argv: list[str], tmp_path: Path) -> None:
    out = Path(__file__).resolve().parent.parent / "sample"
    made = tmp_path / "out"
    rc, err = _run([str(out / "PASS.0.tar"), "-o", str(made), "--allow-missing-metadata", "--no-progress"])
    assert rc == 0, err
    args = [a.replace("{out}", str(made)) for a in argv]
    shell = f"{sys.executable} -m pass_wds.cli {' '.join(args)} | true"  # the reader is gone: EPIPE
    r = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert r.stderr == "", r.stderr
