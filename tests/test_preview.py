"""``pass-wds preview``: the PNG is opened and its content checked (tiles, captions, the recipe's views exactly as
the loader produces them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeOutputs
from PIL import Image

from pass_wds.preview import _to_uint8, first_batch, preview

PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]


@pytest.fixture(scope="module")
def out(fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.small_output("250KB", n_images=24)


def _region(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return img[top:bottom, left:right]


def test_contact_sheet_has_n_pictures_with_key_and_credit(out: Path, tmp_path: Path) -> None:
    png = tmp_path / "grid.png"
    r = subprocess.run(
        [*PASS_WDS, "preview", str(out), "--out", str(png), "-n", "6", "--columns", "3"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "wrote" in r.stdout and "6 samples" in r.stdout, r.stderr
    result = preview(str(out), str(tmp_path / "again.png"), n=6, columns=3)
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert (img.shape[1], img.shape[0]) == result.size
    assert len(result.tiles) == 6 and all(len(t) == 1 for t in result.tiles)
    assert (tmp_path / "again.png").read_bytes() == png.read_bytes()  # same seed, same picture
    covered = np.zeros(img.shape[:2], bool)
    for (box,), cap in zip(result.tiles, result.captions, strict=True):
        pic = _region(img, box)
        assert pic.size and pic.std() > 5, "a thumbnail is blank"
        text = _region(img, cap)
        assert (text < 100).any() and (text > 200).mean() > 0.5, "a caption is missing"
        for b in (box, cap):
            covered[b[1] : b[3], b[0] : b[2]] = True
    assert (img[~covered] > 200).mean() > 0.9  # white between the tiles
    header = img[: result.tiles[0][0][1] - 2]
    assert (header < 100).any()  # the title line
    # three tiles per row: the second row starts below the first
    assert result.tiles[3][0][1] > result.tiles[0][0][3]


def test_recipe_views_are_exactly_what_the_loader_yields(out: Path, tmp_path: Path) -> None:
    png = tmp_path / "simclr.png"
    result = preview(str(out), str(png), n=3, recipe="simclr", seed=7, thumb=224)
    assert len(result.tiles) == 3 and all(len(t) == 2 for t in result.tiles)
    batch, rec = first_batch(str(out), 3, recipe="simclr", seed=7)  # the same call a training script makes
    assert list(batch["__key__"]) == result.keys
    for i in range(3):
        for v in range(2):
            expected = _to_uint8(batch["views"][v][i], rec.config.mean, rec.config.std)
            assert np.array_equal(result.views[i][v], expected)
        a, b = result.views[i]
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 5  # two different augmentations
    img = np.asarray(Image.open(png).convert("RGB"))
    for i in range(3):
        for v in range(2):
            assert np.array_equal(
                _region(img, result.tiles[i][v]), result.views[i][v]
            )  # drawn 1:1 at thumb 224


def test_dino_local_views_are_drawn_smaller(out: Path, tmp_path: Path) -> None:
    result = preview(str(out), str(tmp_path / "dino.png"), n=2, recipe="dino", thumb=112)
    boxes = result.tiles[0]
    assert len(boxes) == 10
    sizes = [(b[2] - b[0], b[3] - b[1]) for b in boxes]
    assert sizes[:2] == [(112, 112)] * 2 and sizes[2:] == [(48, 48)] * 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "grid.gif"], "--out: expected a .png or .jpg"),
        (["--out", "g.png", "--recipe", "nope"], "--recipe:"),
        (["--out", "g.png", "-n", "0"], "-n/--samples: must be >= 1"),
    ],
)
def test_bad_arguments_are_one_line(out: Path, tmp_path: Path, args: list[str], message: str) -> None:
    r = subprocess.run([*PASS_WDS, "preview", str(out), *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not list(tmp_path.iterdir())
