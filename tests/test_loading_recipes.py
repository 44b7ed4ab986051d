"""Loader + pass_wds.augment recipes on real photos (tests/data): shapes, dtypes, device stage, corrupt JPEGs, resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from conftest import find_image
from shardkit import write_shards

from pass_wds.augment import load_recipe
from pass_wds.loading import make_loader

PHOTOS = [
    "img2dataset__123_456.jpg", "img2dataset__208_495.jpg", "img2dataset__321_421.jpg", "img2dataset__389_535.jpg",
    "img2dataset__416_264.jpg", "img2dataset__456_123.jpg", "gradio__lion.jpg", "gradio__cheetah1.jpg",
    "max-srenh__food.png", "exifsamples__Nikon_D70.jpg", "exifsamples__Canon_40D.jpg", "ljt__testorig.jpg",
]  # fmt: skip
TRUNCATED = "sharp__truncated.jpg"


@pytest.fixture(scope="module")
def photo_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    images = [find_image(n).read_bytes() for n in PHOTOS]
    images.insert(5, find_image(TRUNCATED).read_bytes())  # 13 samples: 1 corrupt
    write_shards(root, [7, 6], image=lambda s, i: images[s * 7 + i])
    return root / "index.json"


def test_eval_recipe_single_view_and_device_stage(photo_shards: Path) -> None:
    loader = make_loader(str(photo_shards), batch_size=4, num_workers=2, recipe="eval")
    (h, w) = load_recipe("eval").view_sizes[0]
    batches = list(loader)
    assert len(batches) == 3
    for b in batches:
        assert b["image"].shape == (4, 3, h, w) and b["image"].dtype == torch.uint8
    assert loader.stats.errors == (0 if "s000_00005" in loader.dropped_keys else 1)
    on_device = make_loader(str(photo_shards), batch_size=4, num_workers=0, recipe="eval", device="cpu")
    b = next(iter(on_device))
    assert b["image"].dtype == torch.float32 and b["image"].shape == (4, 3, h, w)
    assert -3.0 < float(b["image"].min()) < float(b["image"].max()) < 3.0  # normalised, not 0..255


@pytest.mark.parametrize("name", ["simclr", "dino"])
def test_multi_view_recipes(photo_shards: Path, name: str) -> None:
    sizes = load_recipe(name).view_sizes
    loader = make_loader(str(photo_shards), batch_size=3, num_workers=2, recipe=name, remainder="pad")
    batches = list(loader)
    assert len(batches) == 5  # 13 samples padded to 15
    for b in batches:
        assert [tuple(v.shape) for v in b["views"]] == [(3, 3, h, w) for h, w in sizes]
        assert all(v.dtype == torch.uint8 for v in b["views"])
        assert len(b["json"]) == 3 and all("gid" in j for j in b["json"])
    # The corrupt sample is delivered once (twice if padding repeats it), always substituted, never crashing.
    assert loader.stats.errors >= 1 and {x["key"] for x in loader.stats.bad} == {"s000_00005"}
    # counted under the decoder's reason, a word of errors.jsonl's vocabulary (not an exception class name)
    assert {x["reason"] for x in loader.stats.bad} == {"truncated"}


def test_resume_reproduces_augmented_batches(photo_shards: Path) -> None:
    kw = {"batch_size": 2, "num_workers": 2, "recipe": "simclr", "device": "cpu", "seed": 4}
    full = list(make_loader(str(photo_shards), **kw))
    first = make_loader(str(photo_shards), **kw)
    head = list(itertools.islice(first, 2))
    resumed = make_loader(str(photo_shards), **kw)
    resumed.load_state_dict(first.state_dict())
    rest = list(resumed)
    assert len(head) + len(rest) == len(full) == 6
    for a, b in zip(head + rest, full, strict=True):
        assert a["__key__"] == b["__key__"]
        assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"], strict=True))
