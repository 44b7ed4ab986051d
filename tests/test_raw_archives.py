"""Raw image archives are not datasets (issue 20, item 2): the loader, ``inspect``, ``verify``, ``preview`` and
``bench`` refuse PASS's own tars (and tars of lone images under folders) in one line that says to run
make-shards first, unless the user opts in; real WebDataset shards of other tools keep working; a shard that
repeats a key is warned about once."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import find_image

from pass_wds import dataset, make_loader, verify
from pass_wds.dataset import RawArchiveError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample"
PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]
JPEG = find_image("img2dataset__208_495.jpg").read_bytes()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample's raw PASS tars, as `pass-wds fetch` leaves them (with the metadata beside them)."""
    folder = tmp_path_factory.mktemp("raw") / "pass"
    shutil.copytree(SAMPLE, folder, ignore=shutil.ignore_patterns("README.md"))
    return folder


def test_the_loader_refuses_raw_pass_tars_in_every_spelling(raw: Path) -> None:
    tars = sorted(str(p) for p in raw.glob("PASS.*.tar"))
    for source in (str(raw), str(raw / "PASS.*.tar"), str(raw / "PASS.{0..1}.tar"), tars[0], tars):
        with pytest.raises(RawArchiveError) as e:
            make_loader(source, batch_size=2, num_workers=0)
        msg = str(e.value)
        assert "raw PASS archive" in msg and "PASS_dataset/dummy_folder/" in msg, msg
        assert f"make-shards '{raw}/PASS.*.tar' --metadata {raw}/pass_metadata.csv --output OUT" in msg, msg
        assert "allow_raw_archives=True" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "cmd",
    [
        ["inspect"],
        ["inspect", "--sample", "0cc48eee86e4994fca9f667fcc6fc80c"],
        ["verify"],
        ["preview", "--out", "PREVIEW"],
        ["bench", "--batches", "1", "--workers", "0", "--batch-size", "2"],
    ],
)
def test_commands_refuse_raw_tars_in_one_line(raw: Path, tmp_path: Path, cmd: list[str]) -> None:
    png = tmp_path / "preview.png"
    argv = [*PASS_WDS, cmd[0], str(raw), *[str(png) if a == "PREVIEW" else a for a in cmd[1:]]]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (cmd, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "raw PASS archive" in lines[0] and "make-shards" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not png.exists()


def test_the_opt_in_reads_them_as_they_are(raw: Path, caplog: pytest.LogCaptureFixture) -> None:
    loader = make_loader(str(raw), batch_size=2, num_workers=0, shuffle=False, allow_raw_archives=True)
    keys = [k for b in loader for k in b["__key__"]]
    assert len(keys) == 38 and all(k.startswith("PASS_dataset/dummy_folder/") for k in keys)
    r = subprocess.run(
        [*PASS_WDS, "inspect", str(raw), "--allow-raw-archives"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "samples      38" in r.stdout, r.stderr
    r = subprocess.run(
        [*PASS_WDS, "verify", str(raw), "--allow-raw-archives"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "all 2 shards ok" in r.stdout, r.stderr
    assert all(c.ok for c in verify.verify(str(raw), allow_raw_archives=True))


def test_the_converted_output_of_the_same_tars_is_read(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run(
        [*PASS_WDS, "make-shards", str(raw / "PASS.*.tar"), "--metadata", str(raw / "pass_metadata.csv")]
        + ["--output", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    for source in (str(out), str(out / "pass-*.tar")):  # with and without the manifest
        keys = [k for b in make_loader(source, batch_size=2, num_workers=0) for k in b["__key__"]]
        assert len(keys) == 36 and all("/" not in k for k in keys)


def test_any_tar_of_lone_images_under_folders_is_refused(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "photos.tar", [(f"holiday/2019/img{i:03d}.jpg", JPEG) for i in range(5)])
    with pytest.raises(RawArchiveError, match=r"looks like a raw image archive.*holiday/2019/img000\.jpg"):
        dataset.resolve(str(tar))
    with pytest.raises(RawArchiveError, match="make-shards"):
        dataset.resolve(str(tar), counts=False)  # verify's way: only the start of the shard is looked at
    assert dataset.resolve(str(tar), allow_raw_archives=True).samples == 5


def test_only_the_start_is_needed_to_tell(tmp_path: Path) -> None:
    """A raw archive cut off far into it is still recognised from its first members (verify reads no more)."""
    whole = _tar(tmp_path / "whole.tar", [(f"d/{i:04d}.jpeg", JPEG) for i in range(200)]).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: len(whole) // 2 + 100])
    with pytest.raises(RawArchiveError):
        verify.verify(str(cut))


@pytest.mark.parametrize(
    "members",
    [
        [(f"train/{i:03d}.jpg", JPEG) for i in range(3)],
        [(n, d) for i in range(3) for n, d in ((f"train/{i:03d}.jpg", JPEG), (f"train/{i:03d}.json", b"{}"))],
        [(n, d) for i in range(3) for n, d in ((f"cls/{i:03d}.png", JPEG), (f"cls/{i:03d}.cls", b"7"))],
        [
            (f"{i:03d}.jpg", JPEG) for i in range(3)
        ],  # lone images at the top: how img2dataset-style tools write
        [(f"texts/{i:03d}.txt", b"hello") for i in range(3)],  # no images: not an image archive
    ],
    ids=["lone-in-folder", "with-json", "with-cls", "top-level", "not-images"],
)
def test_webdataset_layouts_are_not_mistaken_for_raw(
    tmp_path: Path, members: list[tuple[str, bytes]]
) -> None:
    tar = _tar(tmp_path / "shard.tar", members)
    raw_like = all(n.count("/") and n.endswith(".jpg") for n, _ in members)
    if raw_like:
        with pytest.raises(RawArchiveError):
            dataset.resolve(str(tar))
    else:
        assert dataset.resolve(str(tar)).samples == 3


def test_foreign_shards_of_other_tools_need_no_opt_in(corpus: Path) -> None:
    """All 14 shards written by other tools (several with folder paths: aistore, webdataset's compressed)."""
    shards = sorted((corpus / "foreign-shards").iterdir())
    assert len(shards) == 14
    for shard in shards:
        assert dataset.resolve(str(shard)).samples > 0, shard.name
        assert dataset.resolve(str(shard), counts=False).shards, shard.name


def test_a_shard_that_repeats_a_key_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def members(tag: str) -> list[tuple[str, bytes]]:
        return [(f"{k}.jpg", JPEG) for k in ("a", "b", "a", "c", "b")] + [(f"{tag}.jpg", JPEG)]

    shards = [str(_tar(tmp_path / f"s{i}.tar", members(f"x{i}"))) for i in range(2)]
    with caplog.at_level(logging.WARNING, logger="pass_wds.dataset"):
        loader = make_loader(shards, batch_size=2, num_workers=0, shuffle=False)
        keys = [k for b in loader for k in b["__key__"]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "s0.tar repeats sample keys (2 times, first 'a')" in warnings[0], warnings[0]
    assert "1 more shards repeat keys too" in warnings[0]
    assert keys.count("a") == 4  # every copy is delivered (and said so), none silently dropped
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pass_wds.dataset"):
        make_loader(
            shards[:1] + [str(_tar(tmp_path / "u.tar", [("z.jpg", JPEG)]))], batch_size=1, num_workers=0
        )
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
