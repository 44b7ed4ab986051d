"""Recipes: configs, worker outputs, determinism, and the batched colour stage against torchvision's ops."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
import yaml
from conftest import DATA, find_image

from pass_wds.augment import (
    BUILTIN_RECIPES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CallableRecipe,
    ColourParams,
    Recipe,
    RecipeLike,
    ViewConfig,
    apply_colour,
    builtin_config,
    gaussian_blur,
    load_recipe,
    sample_colour_params,
)
from pass_wds.augment.geometry import center_crop_box, random_resized_crop_box
from pass_wds.augment.recipe_config import RECIPE_DIR
from pass_wds.config import ConfigError
from pass_wds.decoding import DecodeError, decode_tensor

EXPECTED_VIEWS = {
    "eval": [224],
    "simclr": [224, 224],
    "mocov2": [224, 224],
    "byol": [224, 224],
    "dino": [224, 224] + [96] * 8,
    "swav": [224, 224] + [96] * 6,
}


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    names = ["sklearn__china.jpg", "pillow__flower2.jpg", "img2dataset__208_495.jpg", "max-srenh__food.png"]
    return [find_image(n).read_bytes() for n in names]


@pytest.fixture(scope="module")
def small_images() -> torch.Tensor:
    """Eight real photos as float (8, 3, 96, 96) in [0, 1]."""
    paths = sorted((DATA / "photos").glob("*.jpg"))[:8]
    out = []
    for p in paths:
        t = decode_tensor(p.read_bytes())[None].float()
        out.append(
            torch.nn.functional.interpolate(t, size=(96, 96), mode="bilinear", antialias=True)[0] / 255
        )
    return torch.stack(out).clamp(0, 1)


def _views(out: dict[str, Any]) -> list[torch.Tensor]:
    return [out["image"]] if "image" in out else out["views"]


def _collate(outs: list[dict[str, Any]]) -> dict[str, Any]:
    if "image" in outs[0]:
        return {"image": torch.stack([o["image"] for o in outs])}
    return {"views": [torch.stack([o["views"][i] for o in outs]) for i in range(len(outs[0]["views"]))]}


def test_builtin_recipes_are_the_package_yaml_with_the_published_parameters() -> None:
    """The YAML in pass_wds/augment/recipes/ is the only definition: names, files and loaders agree."""
    assert BUILTIN_RECIPES == ("byol", "dino", "eval", "mocov2", "simclr", "swav")
    for name in BUILTIN_RECIPES:
        path = RECIPE_DIR / f"{name}.yaml"
        from_yaml = load_recipe(path)
        assert isinstance(from_yaml, Recipe)
        assert from_yaml.config == builtin_config(name) == load_recipe(name).config, name  # type: ignore[union-attr]
        assert yaml.safe_load(path.read_text())["name"] == name
    with pytest.raises(ConfigError, match="unknown recipe 'simclr2'; built-in recipes: byol, dino"):
        builtin_config("simclr2")
    simclr = builtin_config("simclr").views[0]
    assert (simclr.brightness, simclr.contrast, simclr.saturation, simclr.hue) == (0.8, 0.8, 0.8, 0.2)
    assert (simclr.jitter_p, simclr.grayscale_p, simclr.blur_p, simclr.blur_kernel) == (0.8, 0.2, 0.5, 23)
    byol = builtin_config("byol").views
    assert [(v.blur_p, v.solarize_p) for v in byol] == [(1.0, 0.0), (0.1, 0.2)]
    dino = builtin_config("dino").views
    assert [(v.count, v.size, v.scale, v.blur_p, v.solarize_p) for v in dino] == [
        (1, 224, (0.4, 1.0), 1.0, 0.0),
        (1, 224, (0.4, 1.0), 0.1, 0.2),
        (8, 96, (0.05, 0.4), 0.5, 0.0),
    ]
    swav = builtin_config("swav").views
    assert [(v.count, v.size, v.scale) for v in swav] == [(2, 224, (0.14, 1.0)), (6, 96, (0.05, 0.14))]
    # the rest of what the Python copy pinned: eval protocol, jitter strengths, grayscale/blur probabilities
    (ev,) = builtin_config("eval").views
    assert (ev.crop, ev.size, ev.resize, ev.flip_p, ev.has_colour) == ("center", 224, 256, 0.0, False)
    jitter = lambda v: (v.jitter_p, v.brightness, v.contrast, v.saturation, v.hue, v.grayscale_p)  # noqa: E731
    (moco,) = builtin_config("mocov2").views
    assert (moco.count, moco.scale, jitter(moco), moco.blur_p) == (
        2,
        (0.2, 1.0),
        (0.8, 0.4, 0.4, 0.4, 0.1, 0.2),
        0.5,
    )
    assert {jitter(v) for v in byol + dino} == {(0.8, 0.4, 0.4, 0.2, 0.1, 0.2)}
    assert {(jitter(v), v.blur_p) for v in swav} == {((0.8, 0.8, 0.8, 0.8, 0.2, 0.2), 0.5)}
    assert {v.interpolation for v in dino} == {"bicubic"} and simclr.count == 2


def test_recipe_spec_forms_and_errors(tmp_path: Path) -> None:
    cfg = dataclasses.asdict(builtin_config("mocov2"))
    assert isinstance(load_recipe(cfg), Recipe)
    assert load_recipe(None).name == "eval"  # type: ignore[union-attr]
    assert load_recipe("simclr", colour="cpu").colour_on_cpu  # type: ignore[union-attr]
    bad = dict(cfg, views=[dict(cfg["views"][0], blur_probability=0.5)])
    with pytest.raises(ConfigError, match="blur_probability"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="jitter_p"):
        load_recipe(dict(cfg, views=[dict(cfg["views"][0], jitter_p=1.5)]))
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_recipe("simclr2")
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(str(tmp_path / "missing.yaml"))
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", "views": [{"size": 64, "count": 3, "blur_p": 1.0}]}))
    mine = load_recipe(path)
    assert isinstance(mine, Recipe) and mine.view_sizes == [(64, 64)] * 3 and mine.output_key == "views"


@pytest.mark.parametrize("name", BUILTIN_RECIPES)
def test_recipe_outputs_shapes_and_device_stage(photos: list[bytes], name: str) -> None:
    recipe = load_recipe(name)
    assert isinstance(recipe, Recipe)
    outs = [recipe(d, "jpg", np.random.default_rng(i)) for i, d in enumerate(photos)]
    for out in outs:
        views = _views(out)
        assert [tuple(v.shape) for v in views] == [(3, s, s) for s in EXPECTED_VIEWS[name]]
        assert all(v.dtype == torch.uint8 for v in views)
    assert ("image" in outs[0]) == (name == "eval")
    batch = _collate(outs)
    batch["__key__"] = ["a", "b", "c", "d"]
    res = recipe.device_stage(batch, "cpu", generator=0)
    assert res["__key__"] == batch["__key__"]
    lo = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    hi = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    for v, size in zip(_views(res), EXPECTED_VIEWS[name], strict=True):
        assert v.dtype == torch.float32 and tuple(v.shape) == (4, 3, size, size)
        assert lo - 1e-4 <= v.min() and v.max() <= hi + 1e-4
    again = recipe.device_stage(batch, "cpu", generator=0)
    other = recipe.device_stage(batch, "cpu", generator=1)
    assert all(torch.equal(a, b) for a, b in zip(_views(res), _views(again), strict=True))
    if name != "eval":
        assert any(not torch.equal(a, b) for a, b in zip(_views(res), _views(other), strict=True))
    else:  # no colour: the device stage is exactly normalisation
        want = (batch["image"].float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(
            IMAGENET_STD
        )[:, None, None]
        assert torch.allclose(res["image"], want, atol=1e-5)


@pytest.mark.parametrize("colour", ["device", "cpu"])
def test_worker_side_is_deterministic_given_rng_and_views_differ(photos: list[bytes], colour: str) -> None:
    recipe = load_recipe("dino", colour=colour)
    a = recipe(photos[0], "jpg", np.random.default_rng(7))
    b = recipe(photos[0], "jpg", np.random.default_rng(7))
    c = recipe(photos[0], "jpg", np.random.default_rng(8))
    assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"], strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a["views"], c["views"], strict=True))
    assert not torch.equal(a["views"][0], a["views"][1])
    locals_ = a["views"][2:]
    assert len({bytes(v.contiguous().numpy()) for v in locals_}) == len(locals_)
    restored = pickle.loads(pickle.dumps(recipe))
    d = restored(photos[0], "jpg", np.random.default_rng(7))
    assert all(torch.equal(x, y) for x, y in zip(a["views"], d["views"], strict=True))


def test_cpu_colour_path_changes_pixels_and_device_stage_only_normalises(photos: list[bytes]) -> None:
    geometry = load_recipe("byol")
    coloured = load_recipe("byol", colour="cpu")
    assert isinstance(geometry, Recipe) and isinstance(coloured, Recipe)
    plain = geometry(photos[0], "jpg", np.random.default_rng(3))
    done = coloured(photos[0], "jpg", np.random.default_rng(3))
    # same crops (geometry draws come first), but view 0 (blur p=1) was blurred on the CPU
    assert plain["views"][0].shape == done["views"][0].shape
    assert not torch.equal(plain["views"][0], done["views"][0])
    batch = _collate([done])
    res = coloured.device_stage(batch, "cpu", generator=0)
    for raw, out in zip(batch["views"], res["views"], strict=True):
        want = (raw.float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
            :, None, None
        ]
        assert torch.allclose(out, want, atol=1e-5)


def test_corrupt_image_raises_decode_error() -> None:
    data = find_image("pillow__truncated_jpeg.jpg").read_bytes()
    with pytest.raises(DecodeError):
        load_recipe("simclr")(data, "jpg", np.random.default_rng(0))


def test_geometry_sampling_follows_the_configured_ranges() -> None:
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(2000):
        left, top, w, h = random_resized_crop_box(500, 375, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= left and left + w <= 500 and 0 <= top and top + h <= 375
        areas.append(w * h / (500 * 375))
        ratios.append(w / h)
    areas_a, ratios_a = np.array(areas), np.array(ratios)
    assert areas_a.min() >= 0.075 and areas_a.max() <= 1.0
    # same distribution as torchvision's RandomResizedCrop.get_params (rejections bias it below 0.54)
    import torchvision.transforms as T

    torch.manual_seed(0)
    img = torch.zeros(1, 375, 500)
    ref = [T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(2000)]
    ref_areas = np.array([h * w / (500 * 375) for _, _, h, w in ref])
    assert abs(areas_a.mean() - ref_areas.mean()) < 0.03 and abs(areas_a.std() - ref_areas.std()) < 0.03
    assert ratios_a.min() >= 0.74 and ratios_a.max() <= 1.35
    assert center_crop_box(500, 375, 224, 256) == (86, 24, 328, 328)  # side 375 * 224 / 256 = 328, centred


def _params(n: int, **kw: Any) -> ColourParams:
    base = dict(
        jitter=np.zeros(n, bool),
        factors=np.tile([1.0, 1.0, 1.0, 0.0], (n, 1)),
        order=np.tile([0, 1, 2, 3], (n, 1)),
        gray=np.zeros(n, bool),
        blur=np.zeros(n, bool),
        sigma=np.ones(n),
        solarize=np.zeros(n, bool),
    )
    base.update(kw)
    return ColourParams(**base)


def _torchvision_jitter(img: torch.Tensor, f: np.ndarray, order: np.ndarray) -> torch.Tensor:
    for op in order:
        if op == 0:
            img = TF.adjust_brightness(img, float(f[0]))
        elif op == 1:
            img = TF.adjust_contrast(img, float(f[1]))
        elif op == 2:
            img = TF.adjust_saturation(img, float(f[2]))
        else:
            img = TF.adjust_hue(img, float(f[3]))
    return img


def test_fused_colour_matrix_matches_torchvision_jitter(small_images: torch.Tensor) -> None:
    x = small_images
    n = len(x)
    spec = ViewConfig()
    rng = np.random.default_rng(0)
    for with_hue, tol in ((False, 0.01), (True, 0.03)):
        factors = np.column_stack(
            [rng.uniform(0.7, 1.3, n), rng.uniform(0.7, 1.3, n), rng.uniform(0.6, 1.4, n), np.zeros(n)]
        )
        if with_hue:
            factors[:, 3] = rng.uniform(-0.1, 0.1, n)
        order = np.argsort(rng.random((n, 4)), axis=1)
        params = _params(n, jitter=np.ones(n, bool), factors=factors, order=order)
        ours = apply_colour(x.clone(), params, spec)
        ref = torch.stack([_torchvision_jitter(x[i], factors[i], order[i]) for i in range(n)])
        err = (ours - ref).abs().mean().item()
        assert err < tol, (with_hue, err)
    # each linear op alone (no clamp reached): essentially exact
    for j, value in ((0, 0.8), (1, 0.6), (2, 1.5)):
        f = np.tile([1.0, 1.0, 1.0, 0.0], (n, 1))
        f[:, j] = value
        ours = apply_colour(x.clone(), _params(n, jitter=np.ones(n, bool), factors=f), spec)
        ref = torch.stack([_torchvision_jitter(x[i], f[i], np.arange(4)) for i in range(n)])
        assert (ours - ref).abs().max() < 1e-4
    # the scale=255 path (used on uint8 data) equals the [0, 1] path
    params = _params(n, jitter=np.ones(n, bool), factors=factors, order=order, gray=np.arange(n) % 2 == 0)
    a = apply_colour(x.clone(), params, spec)
    b = apply_colour(x.clone() * 255, params, spec, scale=255.0) / 255
    assert (a - b).abs().max() < 1e-4


def test_grayscale_solarize_and_blur_match_torchvision(small_images: torch.Tensor) -> None:
    x = small_images
    n = len(x)
    spec = ViewConfig(blur_kernel=23, solarize_threshold=0.5)
    gray = apply_colour(x.clone(), _params(n, gray=np.ones(n, bool)), spec)
    assert (gray - TF.rgb_to_grayscale(x, num_output_channels=3)).abs().max() < 1e-5
    sol = apply_colour(x.clone(), _params(n, solarize=np.ones(n, bool)), spec)
    assert torch.equal(sol, TF.solarize(x, 0.5))
    sigmas = np.array([0.1, 0.5, 0.8, 1.0, 1.3, 1.7, 2.0, 2.0])
    for method in ("shift", "conv"):
        ours = gaussian_blur(x, sigmas, 23, method=method)
        for i, s in enumerate(sigmas):
            ref = TF.gaussian_blur(x[i], [23, 23], [float(s), float(s)])
            assert (ours[i] - ref).abs().max() < 1e-3, (method, s)
    # per-sample choice: only the samples that drew a blur change
    mask = np.arange(n) % 2 == 0
    part = apply_colour(x.clone(), _params(n, blur=mask, sigma=np.full(n, 1.5)), spec)
    assert torch.equal(part[~torch.from_numpy(mask)], x[~torch.from_numpy(mask)])
    assert not torch.equal(part[torch.from_numpy(mask)], x[torch.from_numpy(mask)])


def test_parameter_probabilities_per_view() -> None:
    rng = np.random.default_rng(0)
    byol = builtin_config("byol").views
    p1 = sample_colour_params(byol[0], 4000, rng)
    p2 = sample_colour_params(byol[1], 4000, rng)
    assert p1.blur.all() and not p1.solarize.any()
    assert abs(p2.blur.mean() - 0.1) < 0.02 and abs(p2.solarize.mean() - 0.2) < 0.02
    assert abs(p1.jitter.mean() - 0.8) < 0.02 and abs(p1.gray.mean() - 0.2) < 0.02
    assert p1.factors[:, 2].min() >= 0.8 and p1.factors[:, 2].max() <= 1.2  # saturation 0.2
    assert np.abs(p1.factors[:, 3]).max() <= 0.1 and p1.sigma.min() >= 0.1 and p1.sigma.max() <= 2.0
    assert {tuple(o) for o in p1.order[:200]} != {(0, 1, 2, 3)}  # the order is random per sample


def test_user_callables(photos: list[bytes]) -> None:
    import torchvision.transforms as T

    tf = T.Compose([T.RandomResizedCrop(64), T.ColorJitter(0.4, 0.4, 0.4, 0.1), T.PILToTensor()])
    recipe = load_recipe(tf)
    assert isinstance(recipe, CallableRecipe) and not recipe.raw
    a = recipe(photos[0], "jpg", np.random.default_rng(5))
    b = recipe(photos[0], "jpg", np.random.default_rng(5))
    c = recipe(photos[0], "jpg", np.random.default_rng(6))
    assert a["image"].shape == (3, 64, 64) and torch.equal(a["image"], b["image"])
    assert not torch.equal(a["image"], c["image"])
    out = recipe.device_stage({"image": torch.stack([a["image"], c["image"]])}, "cpu")
    assert out["image"].dtype == torch.float32 and out["image"].shape == (2, 3, 64, 64)

    def raw(data: bytes, ext: str, rng: np.random.Generator) -> dict[str, Any]:
        return {"image": torch.full((3, 8, 8), int(rng.integers(0, 255)), dtype=torch.uint8), "ext": ext}

    r = load_recipe(raw)
    assert isinstance(r, CallableRecipe) and r.raw
    assert r(b"x", "png", np.random.default_rng(0))["ext"] == "png"
    with pytest.raises(ConfigError):
        load_recipe(raw, colour="cpu")


def test_both_kinds_of_recipe_are_one_protocol() -> None:
    """The loader types its recipes as :class:`RecipeLike`; both kinds satisfy it (statically: mypy checks
    these assignments; at run time: ``isinstance``), and a plain function is not one until wrapped."""

    def tf(img: Any) -> Any:
        return img

    kinds: list[RecipeLike] = [load_recipe("simclr"), load_recipe(tf), Recipe(builtin_config("eval"))]
    assert all(isinstance(r, RecipeLike) for r in kinds)
    assert {type(r) for r in kinds} == {Recipe, CallableRecipe}
    assert not isinstance(tf, RecipeLike)


def test_colour_ops_agree_on_channels_last_batches(small_images: torch.Tensor) -> None:
    """Loader batches are channels-last; the fused matrix takes a layout-specific path that must agree."""
    x = small_images
    n = len(x)
    rng = np.random.default_rng(3)
    spec = ViewConfig(blur_kernel=23)
    params = sample_colour_params(spec, n, rng)
    cl = x.clone().contiguous(memory_format=torch.channels_last)
    assert not cl.is_contiguous()
    a = apply_colour(x.clone(), params, spec)
    b = apply_colour(cl, params, spec)
    assert b.shape == a.shape and (a - b).abs().max() < 1e-5


def test_collated_views_are_channels_last_with_the_same_pixels(photos: list[bytes]) -> None:
    from pass_wds.loading.pipeline import collate

    rec = load_recipe("simclr")
    outs = [rec(p, "jpg", np.random.default_rng(i)) for i, p in enumerate(photos)]
    samples = [{"__key__": str(i), "__url__": "u"} for i in range(len(photos))]
    batch = collate(outs, samples)
    for v, view in enumerate(batch["views"]):
        assert view.shape == (len(photos), 3, 224, 224) and view.is_contiguous(
            memory_format=torch.channels_last
        )
        assert torch.equal(view, torch.stack([o["views"][v].contiguous() for o in outs]))
    plain = collate([{"x": torch.arange(6).view(2, 3)} for _ in range(2)], samples[:2])
    assert plain["x"].is_contiguous() and plain["x"].shape == (2, 2, 3)


def test_cpu_colour_per_batch_equals_per_sample(photos: list[bytes]) -> None:
    """The loader applies CPU colour once per batch (finish_batch); each sample must come out as the
    per-sample call makes it, whatever its batch-mates (blur kernels are cut per sample)."""
    from pass_wds.loading.pipeline import collate

    rec = load_recipe("simclr", colour="cpu")
    assert isinstance(rec, Recipe)
    alone = [rec(p, "jpg", np.random.default_rng(10 + i)) for i, p in enumerate(photos)]
    outs = [rec.worker_sample(p, "jpg", np.random.default_rng(10 + i)) for i, p in enumerate(photos)]
    batch = rec.finish_batch(collate(outs, [{"__key__": str(i), "__url__": "u"} for i in range(len(photos))]))
    assert "__colour__" not in batch
    for v, view in enumerate(batch["views"]):
        ref = torch.stack([a["views"][v] for a in alone])
        diff = (view.int() - ref.int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 1e-3, (
            v,
            int(diff.max()),
            float(diff.float().mean()),
        )
    # and colour was applied: the uncoloured crops differ
    plain = collate(
        [rec.worker_sample(p, "jpg", np.random.default_rng(10 + i)) for i, p in enumerate(photos)],
        [{"__key__": "k", "__url__": "u"}] * len(photos),
    )
    assert not torch.equal(plain["views"][0], batch["views"][0])
