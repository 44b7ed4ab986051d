"""decode: device and decode: fast on real images (the bundled tests/data set, so they run anywhere).

The device stage's code runs with ``device="cpu"`` too (torchvision's batched ``decode_jpeg`` on the CPU, the
same ``roi_align`` crops and colour kernels), so these tests cover it without a GPU; the ``cuda`` marker
runs the same tests on a GPU (skipped without CUDA, see conftest.py).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import find_image
from shardkit import write_shards

from pass_wds.augment import load_recipe
from pass_wds.augment.recipe_config import RecipeConfig
from pass_wds.augment.recipes import Recipe
from pass_wds.config import ConfigError
from pass_wds.decoding import DecodeOptions, open_image
from pass_wds.loading import make_loader
from pass_wds.loading.pipeline import SampleError, collate

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
PHOTOS = [
    "img2dataset__123_456.jpg", "img2dataset__208_495.jpg", "img2dataset__321_421.jpg", "img2dataset__389_535.jpg",
    "img2dataset__416_264.jpg", "img2dataset__456_123.jpg", "gradio__lion.jpg", "gradio__cheetah1.jpg",
    "exifsamples__Nikon_D70.jpg", "exifsamples__Canon_40D.jpg", "ljt__testorig.jpg", "img2dataset__524_316.jpg",
]  # fmt: skip
# Not for the batched decoder: PNG, WebP, CMYK JPEG, arithmetic-coded JPEG; a grayscale JPEG, which it takes.
FALLBACK = [
    "pillow__transparent.png",
    "pillow__hopper_orientation_6.webp",
    "pillow__pil_sample_cmyk.jpg",
    "ljt__testimgari.jpg",
]
GRAY = "pillow__hopper_gray.jpg"
TRUNCATED = "sharp__truncated.jpg"  # full header, data cut short: every decoder rejects it
# Crops without colour, so that the geometry alone is compared.
PLAIN_VIEWS: dict[str, Any] = {"name": "crops", "views": [{"count": 2, "size": 64, "scale": [0.2, 1.0]}]}
# Per-image mean absolute difference (0..255) between the device path and the worker path for the same crops.
# Against the worker path decoding at full size (draft off) only the resampling filter differs (antialiased
# triangle vs roi_align's adaptive box average): measured worst image of PHOTOS 3.5. The default worker path
# also decodes at a reduced DCT scale when a crop allows and rounds the crop box to that scale's pixels (it
# is itself up to 5.3 from the full-size reference); device vs default worker: measured worst view 8.2.
TOLERANCE = 4.0
TOLERANCE_DRAFT = 10.0


def _read(name: str) -> bytes:
    return find_image(name).read_bytes()


def _cuda_or_skip(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def _batch(recipe: Recipe, images: list[bytes], seed: int = 0) -> dict[str, Any]:
    """What a loader worker sends for these images: per-sample worker output, collated, finished."""
    outs = [recipe.worker_sample(d, "jpg", np.random.default_rng([seed, i])) for i, d in enumerate(images)]
    samples = [{"__key__": f"k{i}", "__url__": "mem"} for i in range(len(images))]
    return recipe.finish_batch(collate(outs, samples))


def _views(recipe: Recipe, images: list[bytes], device: str, seed: int = 0) -> list[torch.Tensor]:
    """Views as 0..255 floats on the CPU, through the device stage (no normalisation)."""
    out = recipe.device_stage(_batch(recipe, images, seed), device, generator=1, normalize_output=False)
    views = out["views"] if "views" in out else [out["image"]]
    return [v.float().cpu() * 255.0 for v in views]


def _full_size(recipe: Recipe) -> Recipe:
    """The same recipe decoding at full size in the worker (no DCT scaling): the reference for the crops."""
    recipe.decode_options = DecodeOptions(draft=False)
    return recipe


def _per_image_mae(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(x - y).abs().mean(dim=(1, 2, 3)) for x, y in zip(a, b, strict=True)]).amax(0)


@pytest.mark.parametrize("device", DEVICES)
def test_device_crops_match_the_worker_path_for_the_same_seed(device: str) -> None:
    _cuda_or_skip(device)
    images = [_read(n) for n in PHOTOS]
    worker = load_recipe(PLAIN_VIEWS)
    on_device = load_recipe(PLAIN_VIEWS, decode="device")
    assert isinstance(worker, Recipe) and isinstance(on_device, Recipe)
    enc = _batch(on_device, images)["encoded"]
    assert enc.rows.tolist() == list(range(len(images))) and len(enc.fallback_rows) == 0
    got = _views(on_device, images, device)
    mae = _per_image_mae(_views(worker, images, "cpu"), got)
    assert float(mae.max()) < TOLERANCE_DRAFT, mae
    ref = _views(_full_size(worker), images, "cpu")
    mae = _per_image_mae(ref, got)
    assert float(mae.max()) < TOLERANCE, mae
    # The tolerance is meaningful: other crops of the same images are far further away.
    other = _per_image_mae(ref, _views(on_device, images, device, seed=1))
    assert float(other.min()) > 2 * TOLERANCE, other


@pytest.mark.parametrize("device", DEVICES)
def test_non_jpeg_and_corrupt_images_fall_back_inside_one_batch(device: str) -> None:
    _cuda_or_skip(device)
    names = [PHOTOS[0], *FALLBACK[:3], PHOTOS[1], GRAY, *FALLBACK[3:], TRUNCATED, PHOTOS[2]]
    images = [_read(n) for n in names]
    worker = load_recipe(PLAIN_VIEWS)
    on_device = load_recipe(PLAIN_VIEWS, decode="device")
    assert isinstance(worker, Recipe) and isinstance(on_device, Recipe)
    batch = _batch(on_device, images)
    enc = batch["encoded"]
    fallback = [i for i, n in enumerate(names) if n in FALLBACK]
    assert enc.fallback_rows.tolist() == fallback
    assert enc.rows.tolist() == [i for i in range(len(names)) if i not in fallback]
    out = on_device.device_stage(batch, device, generator=1, normalize_output=False)
    bad = names.index(TRUNCATED)
    # The truncated JPEG passes the header walk, fails the batched decode and the CPU decode: substituted by
    # the next decodable sample of the batch (views, key and metadata), and reported for the loader to count.
    stats = out["__decode_stats__"]
    assert stats["errors"] == 1 and stats["bad"][0]["key"] == f"k{bad}"
    assert stats["substituted"] == [[f"k{bad}", f"k{bad + 1}"]]
    assert out["__key__"][bad] == f"k{bad + 1}" and batch["__key__"][bad] == f"k{bad}"
    views = [v.float().cpu() * 255.0 for v in out["views"]]
    for v in views:
        assert torch.equal(v[bad], v[bad + 1])
    # Every other row: the worker path's pixels for the same crops (exactly, for the rows decoded in the worker).
    for i in range(len(names)):
        if i == bad:
            continue
        rng = np.random.default_rng([0, i])  # the seed _batch gave row i
        expected = worker(images[i], "jpg", rng)["views"]
        got = [v[i] for v in views]
        if i in fallback:
            assert all(torch.equal(e.float(), g) for e, g in zip(expected, got, strict=True)), names[i]
        else:
            mae = max(float((e.float() - g).abs().mean()) for e, g in zip(expected, got, strict=True))
            assert mae < TOLERANCE_DRAFT, (names[i], mae)


@pytest.mark.parametrize("device", DEVICES)
def test_exif_orientations_gray_and_cmyk_come_out_upright(device: str) -> None:
    _cuda_or_skip(device)
    names = [f"sharp__Landscape_{i}.jpg" for i in range(1, 9)]
    names += [GRAY, "pillow__pil_sample_cmyk.jpg", "pillow__orientation_rectangle.jpg"]
    images = [_read(n) for n in names]
    spec = {"name": "upright", "views": [{"size": 96, "crop": "center", "resize": 120, "flip_p": 0.0}]}
    worker = load_recipe(spec)
    on_device = load_recipe(spec, decode="device")
    assert isinstance(worker, Recipe) and isinstance(on_device, Recipe)
    assert _batch(on_device, images)["encoded"].fallback_rows.tolist() == [9]  # only the CMYK one
    ref = _views(_full_size(worker), images, "cpu")[0]
    got = _views(on_device, images, device)[0]
    mae = (ref - got).abs().mean(dim=(1, 2, 3))
    assert float(mae.max()) < TOLERANCE, mae
    # All eight orientations of the same photo come out upright, hence (nearly) equal to orientation 1.
    for i in range(1, 8):
        assert float((got[i] - got[0]).abs().mean()) < 25, f"Landscape_{i + 1} is not upright"
        assert float((got[i].flip(2) - got[0]).abs().mean()) > float((got[i] - got[0]).abs().mean())
    gray = got[8]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


@pytest.fixture(scope="module")
def photo_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("device-photos")
    images = [_read(n) for n in PHOTOS]
    images.insert(5, _read(TRUNCATED))  # 13 samples, 1 corrupt
    images.insert(8, _read(FALLBACK[0]))  # 14 samples, one PNG
    write_shards(root, [7, 7], image=lambda s, i: images[s * 7 + i])
    return root / "index.json"


def test_loader_with_device_decode_exact_epochs_counting_and_resume(photo_shards: Path) -> None:
    kw: dict[str, Any] = {"batch_size": 3, "num_workers": 2, "recipe": "simclr", "device": "cpu", "seed": 4}
    accurate = list(make_loader(str(photo_shards), **kw))
    loader = make_loader(str(photo_shards), decode="device", **kw)
    full = list(loader)
    assert len(full) == len(accurate) == 4  # 14 samples, 2 dropped
    for a, b in zip(full, accurate, strict=True):
        assert [tuple(v.shape) for v in a["views"]] == [(3, 3, 224, 224)] * 2
        assert all(v.dtype == torch.float32 for v in a["views"])
        # Same samples in the same order; the corrupt one is substituted by another, as on the worker path.
        keep = [i for i, k in enumerate(b["__key__"]) if k != "s000_00005"]
        assert [a["__key__"][i] for i in keep] == [b["__key__"][i] for i in keep]
    corrupt_seen = "s000_00005" not in loader.dropped_keys
    assert loader.stats.errors == int(corrupt_seen)
    if corrupt_seen:
        assert [x["key"] for x in loader.stats.bad] == ["s000_00005"]
        assert len(loader.stats.substituted) == 1
    # Resume mid-epoch: the rest is identical to the uninterrupted run.
    first = make_loader(str(photo_shards), decode="device", **kw)
    head = list(itertools.islice(first, 1))
    resumed = make_loader(str(photo_shards), decode="device", **kw)
    resumed.load_state_dict(first.state_dict())
    rest = list(resumed)
    assert len(head) + len(rest) == len(full)
    for a, b in zip(head + rest, full, strict=True):
        assert a["__key__"] == b["__key__"]
        assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"], strict=True))


def test_device_decode_failure_raises_with_on_error_raise(photo_shards: Path) -> None:
    loader = make_loader(
        str(photo_shards), batch_size=14, num_workers=0, recipe="eval", decode="device", device="cpu",
        remainder="pad", on_error="raise", shuffle=False,
    )  # fmt: skip
    with pytest.raises(SampleError, match="s000_00005"):
        next(iter(loader))


def test_decode_option_in_recipes_and_loader(photo_shards: Path, tmp_path: Path) -> None:
    assert load_recipe("simclr").config.decode == "accurate"  # type: ignore[union-attr]
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nviews: [{size: 32}]\ndecode: fast\n")
    recipe = load_recipe(str(path))
    assert isinstance(recipe, Recipe) and recipe.decode_options.jpeg_mode == "fast"
    assert load_recipe(str(path), decode="device").config.decode == "device"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="decode must be one of"):
        RecipeConfig(decode="gpu")
    with pytest.raises(ConfigError, match="colour must run there"):
        load_recipe("simclr", colour="cpu", decode="device")
    with pytest.raises(ConfigError, match="needs device="):
        make_loader(str(photo_shards), batch_size=2, recipe="simclr", decode="device")
    with pytest.raises(ConfigError, match="decode must be"):
        make_loader(str(photo_shards), batch_size=2, recipe="simclr", decode="nvjpeg", device="cpu")
    with pytest.raises(ConfigError, match="not to user callables"):
        make_loader(str(photo_shards), batch_size=2, recipe=lambda d, e, r: {}, decode="fast")


def test_fast_decode_is_close_to_accurate_but_not_identical() -> None:
    pytest.importorskip("simplejpeg")
    images = [_read(n) for n in PHOTOS]
    fast, accurate = DecodeOptions(jpeg_mode="fast"), DecodeOptions()
    maes = []
    for data in images:
        a, b = open_image(data, accurate), open_image(data, fast)
        x, y = a.decode_stored().float(), b.decode_stored().float()
        assert x.shape == y.shape
        maes.append(float((x - y).abs().mean()))
    assert max(maes) < 3.0 and np.mean(maes) < 1.5, maes
    assert max(maes) > 0.0  # it really is another IDCT / upsampling
    with pytest.raises(ValueError, match="jpeg_backend"):
        DecodeOptions(jpeg_mode="fast", jpeg_backend="pil")
    # DCT scaling: fast picks the smallest M/8 scale that covers the request, accurate Pillow's 1/2, 1/4, 1/8.
    big = open_image(_read("sklearn__china.jpg"), fast)
    assert (
        big.decode_stored(0.3).shape[2] < open_image(_read("sklearn__china.jpg")).decode_stored(0.3).shape[2]
    )


@pytest.mark.cuda
def test_loader_device_decode_on_cuda_matches_the_cpu_run(photo_shards: Path) -> None:
    """The CUDA path (side stream one batch ahead, pinned EncodedBatch) delivers what device="cpu" does."""
    _cuda_or_skip("cuda")
    kw: dict[str, Any] = {
        "batch_size": 3,
        "num_workers": 2,
        "recipe": "simclr",
        "seed": 4,
        "decode": "device",
    }
    on_cpu = list(make_loader(str(photo_shards), device="cpu", **kw))
    loader = make_loader(str(photo_shards), device="cuda", pin_memory=True, **kw)
    on_gpu = list(loader)
    assert len(on_gpu) == len(on_cpu) and loader.state_dict()["generations"] == []  # epoch done
    for a, b in zip(on_gpu, on_cpu, strict=True):
        assert a["__key__"] == b["__key__"]
        for x, y in zip(a["views"], b["views"], strict=True):
            assert x.is_cuda
            # nvJPEG vs libjpeg-turbo IDCT and float rounding: normalised units (1/255 ≈ 0.017 per level)
            assert float((x.cpu() - y).abs().mean()) < 0.05


def test_multi_size_recipe_with_colour_matches_the_worker_path() -> None:
    """dino: 2 global (224) + 8 local (96) bicubic views with colour; the colour parameters come from the same
    device-stage generator on both paths, so only decode, crop filter and bicubic-vs-bilinear differ."""
    images = [_read(n) for n in PHOTOS[:6]] + [_read(FALLBACK[0])]
    worker = load_recipe("dino")
    on_device = load_recipe("dino", decode="device")
    assert isinstance(worker, Recipe) and isinstance(on_device, Recipe)
    ref = _views(_full_size(worker), images, "cpu")
    got = _views(on_device, images, "cpu")
    assert (
        [tuple(v.shape) for v in got]
        == [tuple(v.shape) for v in ref]
        == [(7, 3, 224, 224)] * 2 + [(7, 3, 96, 96)] * 8
    )
    mae = _per_image_mae(ref, got)
    assert float(mae.max()) < 2 * TOLERANCE, mae  # measured worst 3.1; other crops: > 50
    assert float(mae[-1]) < 1e-3  # the PNG: decoded in the worker on both paths
