"""One notion of a dataset source: folder, index.json, glob, brace pattern or list, for every command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FakeOutputs

from pass_wds import dataset, verify
from pass_wds.hosting import urls

PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]


@pytest.fixture(scope="module")
def out(fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.small_output("250KB")


def _shards(out: Path) -> list[Path]:
    return sorted(out.glob("pass-*.tar"))


def test_every_spelling_of_a_source_names_the_same_shards(out: Path) -> None:
    tars = [str(p) for p in _shards(out)]
    n = len(tars)
    assert n >= 3
    spellings: list[str | list[str]] = [
        str(out),
        str(out) + "/",
        str(out / "index.json"),
        str(out / "pass-*.tar"),
        str(out / f"pass-{{000000..{n - 1:06d}}}.tar"),
        tars,
    ]
    expected = None
    for source in spellings:
        ds = dataset.resolve(source)
        got = [(Path(s.url).name, s.nsamples) for s in ds.shards]
        expected = expected or got
        assert got == expected, source
    # only a folder or its index.json keep the manifest (sha256 for verify, errors.jsonl for inspect)
    assert dataset.resolve(str(out)).manifest is not None
    assert dataset.resolve(str(out / "pass-*.tar")).manifest is None


def test_a_folder_of_shards_without_index_json_is_a_source(out: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in _shards(out):
        shutil.copy(p, bare / p.name)  # no .idx, no index.json: counts come from one header scan
    ds = dataset.resolve(str(bare))
    assert ds.samples == dataset.resolve(str(out)).samples and ds.manifest is None
    assert all(c.ok for c in verify.verify(str(bare)))


def test_a_folder_with_neither_says_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(
        dataset.SourceError, match=r"no index\.json and no shards \(found: notes\.txt, photo\.jpg\)"
    ):
        dataset.resolve(str(tmp_path))
    with pytest.raises(dataset.SourceError, match="does not exist or is empty"):
        dataset.resolve(str(tmp_path / "absent"))
    with pytest.raises(dataset.SourceError, match=r"matches notes\.txt; expected \.tar"):
        dataset.resolve(str(tmp_path / "*.txt"))


def test_an_http_folder_is_found_by_its_index_json(out: Path, http_server) -> None:  # type: ignore[no-untyped-def]
    shutil.copytree(out, http_server.root / "pass")
    ds = dataset.resolve(f"{http_server.url}/pass")
    assert ds.manifest is not None and ds.samples == dataset.resolve(str(out)).samples
    assert urls(f"{http_server.url}/pass")[0] == f"{http_server.url}/pass/pass-000000.tar"
    with pytest.raises(dataset.SourceError, match="HTTP folder cannot be listed"):
        dataset.resolve(f"{http_server.url}/nothing-here")
    signed = f"{http_server.url}/pass/index.json?X-Amz-Signature=s3cr3t&X-Amz-Expires=60"  # by its path
    assert dataset.resolve(signed).samples == dataset.resolve(str(out)).samples
    with pytest.raises(dataset.SourceError) as e:
        dataset.resolve(f"{http_server.url}/pass/nothing.json?X-Amz-Signature=s3cr3t")
    assert "s3cr3t" not in str(e.value)


def test_commands_take_every_spelling_and_fail_in_one_line(out: Path, tmp_path: Path) -> None:
    glob = str(out / "pass-*.tar")
    r = subprocess.run([*PASS_WDS, "verify", glob], capture_output=True, text=True)
    assert r.returncode == 0 and "no index.json, so no size or sha256" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([*PASS_WDS, "inspect", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and "rejected" in r.stdout, r.stderr
    r = subprocess.run([*PASS_WDS, "urls", glob, "--brace"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith(".tar") and "{" in r.stdout, r.stderr
    for cmd in ("verify", "inspect", "urls"):
        r = subprocess.run([*PASS_WDS, cmd, str(tmp_path)], capture_output=True, text=True)
        assert r.returncode == 2, (cmd, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "expected an output folder" in r.stderr, r.stderr


def test_inspect_finds_a_sample_by_its_original_file_name(out: Path) -> None:
    meta = verify.find_sample(str(out), _some_key(out))
    assert meta is not None
    member = meta["_provenance"]["member"]
    for query in (member, Path(member).name, meta["_provenance"]["key"]):
        found = verify.find_sample(str(out), query)
        assert found is not None and found["_provenance"] == meta["_provenance"], query
    r = subprocess.run(
        [*PASS_WDS, "inspect", str(out), "--sample", Path(member).name], capture_output=True, text=True
    )
    assert r.returncode == 0 and json.loads(r.stdout)["_provenance"]["member"] == member
    assert verify.find_sample(str(out), "no-such-name.jpeg") is None


def _some_key(out: Path) -> str:
    idx = next(out.glob("*.idx")).read_text().splitlines()[1]
    return idx.split()[3].split(".")[0]


def test_the_loader_takes_a_folder_and_a_glob(out: Path) -> None:
    from pass_wds import make_loader

    for source in (str(out), str(out / "pass-*.tar")):
        loader = make_loader(source, batch_size=4, recipe=None, num_workers=0, seed=0)
        keys = [k for batch in loader for k in batch["__key__"]]
        assert len(keys) == len(set(keys)) >= 4


def test_a_bucket_prefix_with_or_without_index_json(out: Path, s3) -> None:  # type: ignore[no-untyped-def]
    so = s3.storage_options
    for p in sorted(out.iterdir()):
        if p.is_file():
            s3.put(f"full/{p.name}", p.read_bytes())
            if p.suffix == ".tar":
                s3.put(f"bare/{p.name}", p.read_bytes())  # shards only: counts from one header scan each
    local = dataset.resolve(str(out)).samples
    full = dataset.resolve(f"{s3.url}/full", so)
    assert full.manifest is not None and full.samples == local
    for source in (f"{s3.url}/bare", f"{s3.url}/bare/", f"{s3.url}/bare/pass-*.tar"):
        ds = dataset.resolve(source, so)
        assert ds.manifest is None and ds.samples == local, source
    with pytest.raises(dataset.SourceError, match="does not exist or is empty"):
        dataset.resolve(f"{s3.url}/nothing", so)
