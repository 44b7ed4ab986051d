"""``pass-wds fetch`` against a local HTTP server serving a PASS-shaped fake with the published layout, and
``make-shards --dry-run`` (also straight from the published URLs)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pass_wds import fakedata as fd
from pass_wds.fetch import default_sources, load_sources

PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]
NAMES = ["pass_metadata.csv", *(f"PASS.{i}.tar" for i in range(10))]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ten parts and the metadata CSV, named as the authors publish them."""
    out = tmp_path_factory.mktemp("published")
    fd.make_fake_pass(fd.FakePassConfig(out=str(out), n_images=60, parts=10, bad=True))
    assert sorted(p.name for p in out.iterdir() if p.name in NAMES) == sorted(NAMES)
    return out


@pytest.fixture
def served(fake: Path, http_server):  # type: ignore[no-untyped-def]
    shutil.copytree(fake, http_server.root / "files")
    return http_server


def _fetch(dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PASS_WDS, "fetch", str(dest), "--no-progress", *args], capture_output=True, text=True
    )


def test_the_shipped_sources_name_the_published_files() -> None:
    src = load_sources(None)
    assert src["base_url"] == "https://zenodo.org/record/6615455/files/"
    assert [f["name"] for f in src["files"]] == NAMES
    assert Path(default_sources()).name == "pass-source.yaml"


def test_fetch_downloads_every_file_and_shows_sizes(fake: Path, served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "pass"
    r = _fetch(dest, "--base-url", f"{served.url}/files/")
    assert r.returncode == 0, r.stderr
    for name in NAMES:
        assert (dest / name).read_bytes() == (fake / name).read_bytes(), name
        size = (fake / name).stat().st_size
        assert f"{size / 1e6:,.1f} MB" in r.stdout, (name, r.stdout)
    assert not list(dest.glob("*.part"))
    assert "fetched 11 files" in r.stdout
    again = _fetch(dest, "--base-url", f"{served.url}/files/")
    assert (
        again.returncode == 0 and "fetched 0 files" in again.stdout and "11 already complete" in again.stdout
    )


def test_an_interrupted_download_resumes_with_a_range_request(fake: Path, served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "pass"
    dest.mkdir()
    whole = (fake / "PASS.3.tar").read_bytes()
    half = len(whole) // 2
    (dest / "PASS.3.tar.part").write_bytes(whole[:half])
    r = _fetch(dest, "--base-url", f"{served.url}/files/", "--only", "PASS.3.tar,pass_metadata.csv")
    assert r.returncode == 0, r.stderr
    assert "partial" in r.stdout and "resumes" in r.stdout
    assert (dest / "PASS.3.tar").read_bytes() == whole and not (dest / "PASS.3.tar.part").exists()
    ranges = served.gets("files/PASS.3.tar")
    assert ranges and all(rng is not None and rng.startswith(f"bytes={half}-") for rng in ranges), ranges
    assert not (dest / "PASS.0.tar").exists()  # --only


def test_dry_run_downloads_nothing(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "absent"
    r = _fetch(dest, "--base-url", f"{served.url}/files/", "--dry-run")
    assert r.returncode == 0 and "dry run" in r.stdout and "to download" in r.stdout, r.stderr
    assert not dest.exists()
    assert not served.gets("files/PASS.0.tar")


def test_not_enough_space_or_a_bad_checksum_is_one_line(fake: Path, served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = load_sources(None)
    src["files"] = [{"name": "PASS.0.tar", "size": 10**16}]
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump(src))
    dest = tmp_path / "pass"
    r = _fetch(dest, "--sources", str(big), "--base-url", f"{served.url}/files/")
    assert r.returncode == 2 and "not enough free space" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not dest.exists()

    md5 = hashlib.md5((fake / "PASS.1.tar").read_bytes()).hexdigest()
    src["files"] = [{"name": "PASS.1.tar", "md5": md5}, {"name": "PASS.2.tar", "md5": "0" * 32}]
    sums = tmp_path / "sums.yaml"
    sums.write_text(yaml.safe_dump(src))
    r = _fetch(dest, "--sources", str(sums), "--base-url", f"{served.url}/files/")
    assert r.returncode == 2 and "PASS.2.tar: md5 mismatch" in r.stderr, r.stderr
    assert (dest / "PASS.1.tar").exists() and not (dest / "PASS.2.tar").exists()
    assert not (dest / "PASS.2.tar.part").exists()

    (dest / "PASS.3.tar.part").write_bytes(b"x" * ((fake / "PASS.3.tar").stat().st_size + 1))
    r = _fetch(dest, "--base-url", f"{served.url}/files/", "--only", "PASS.3.tar")
    assert r.returncode == 2 and "more than the" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    r = _fetch(dest, "--base-url", f"{served.url}/files/", "--only", "PASS.10.tar")
    assert r.returncode == 2 and r.stderr.startswith("pass-wds: error: --only: PASS.10.tar not in"), r.stderr


def test_make_shards_dry_run_straight_from_the_published_urls(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    base = f"{served.url}/files"
    r = subprocess.run(
        [
            sys.executable, "-m", "pass_wds.cli", "make-shards", f"{base}/PASS.{{0..9}}.tar",
            "--metadata", f"{base}/pass_metadata.csv", "--output", str(out), "--shard-size", "300KB", "--dry-run",
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "dry run: 10 inputs" in r.stdout and "plan: " in r.stdout and "shards of" in r.stdout, r.stdout
    assert "rejected " in r.stdout and "missing-metadata" in r.stdout, r.stdout
    assert not out.exists()
    out.mkdir()
    r = subprocess.run(
        [*PASS_WDS, "make-shards", f"{base}/PASS.{{0..9}}.tar", "--metadata", f"{base}/pass_metadata.csv",
         "-o", str(out), "--dry-run"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0 and list(out.iterdir()) == [], r.stderr
