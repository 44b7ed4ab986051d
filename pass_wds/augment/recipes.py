"""Augmentation recipes: the ``Recipe`` object built from a config (:mod:`.recipe_config`: dataclasses 1:1 with
the YAML files in ``recipes/``), and ``CallableRecipe`` for a user's function.

A recipe is split where the work is cheapest:

* worker side (``Recipe.__call__``): header parse, crop sampling in the upright frame, one (possibly
  DCT-reduced) decode, antialiased resize and flip per view → uint8 tensors, small to ship between processes;
* device side (``Recipe.device_stage``): per-sample colour jitter, grayscale, blur, solarize and
  normalisation as batched tensor ops on the training device.

``colour: cpu`` moves the colour ops into the worker (fused, see ``colour.py``) for CPU-only training;
the batch then stays uint8 and the device stage only normalises.

``decode`` picks where and how JPEGs are decoded: ``accurate`` (default) and ``fast`` (fast integer IDCT,
plain upsampling, finer DCT scales) decode in the worker; ``device`` leaves JPEG decode and the resized
crops to the device stage (batched nvJPEG on a GPU, see ``pass_wds.decoding.device``), the worker only
parses headers and samples the crops, from the same random stream.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from pass_wds.augment.colour import ColourParams, apply_colour, normalize, sample_colour_params
from pass_wds.augment.geometry import sample_crop
from pass_wds.augment.recipe_config import (
    BUILTIN_RECIPES,
    DECODE_MODES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RecipeConfig,
    ViewConfig,
    builtin_config,
)
from pass_wds.buffers import BufferPool
from pass_wds.config import ConfigError, load_yaml
from pass_wds.decoding import DecodeError, DecodeOptions, decode_rgb, open_image
from pass_wds.decoding.device import DeviceSample, EncodedBatch, decode_views, pack
from pass_wds.errors import did_you_mean
from pass_wds.format.reasons import reason_of

DEFERRED_COLOUR = "__colour__"  # per-sample CPU colour parameters, applied per batch (Recipe.finish_batch)
DEVICE_SAMPLE = "__device_sample__"  # decode: device — a worker's DeviceSample, packed per batch
ENCODED = "encoded"  # decode: device — the batch's EncodedBatch, decoded by Recipe.device_stage
DECODE_STATS = "__decode_stats__"  # decode: device — samples the device stage could not decode

__all__ = [
    "BUILTIN_RECIPES",
    "DECODE_MODES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CallableRecipe",
    "Recipe",
    "RecipeConfig",
    "RecipeLike",
    "ViewConfig",
    "builtin_config",
    "load_recipe",
]


@runtime_checkable
class RecipeLike(Protocol):
    """What the loader asks of a recipe; :class:`Recipe` (a config) and :class:`CallableRecipe` (your
    function) are its two kinds, and :func:`load_recipe` turns anything else into one of them.

    In the workers, each sample is ``recipe(data, ext, rng)`` → a dict of tensors, deterministic given
    ``rng``; in the training process, ``device_stage`` finishes each collated batch on the device. Optional
    hooks the loader uses when present: ``worker_sample`` (called per sample instead of ``__call__``),
    ``finish_batch`` (per collated batch, in the worker) and ``decode_on_device``."""

    @property
    def name(self) -> str: ...

    def __call__(
        self, data: bytes, ext: str = "jpg", rng: np.random.Generator | None = None
    ) -> dict[str, Any]: ...

    def device_stage(
        self,
        batch: dict[str, Any],
        device: torch.device | str = "cpu",
        *,
        generator: np.random.Generator | int | None = None,
        normalize_output: bool = True,
    ) -> dict[str, Any]: ...


class Recipe:
    """Worker-side geometry + device-side colour for one :class:`RecipeConfig` (picklable)."""

    cpu_chunk = 8  # samples per chunk when colour runs on the CPU

    def __init__(self, config: RecipeConfig) -> None:
        self.config = config
        try:
            self.decode_options = DecodeOptions(
                max_pixels=config.max_pixels,
                alpha_background=config.alpha_background,
                jpeg_mode="fast" if config.decode == "fast" else "accurate",
            )
        except ValueError as e:
            raise ConfigError(f"recipe {config.name!r}: {e}") from None
        # expanded view list: view i of every sample uses views[self._kind[i]]
        self._kind = [k for k, v in enumerate(config.views) for _ in range(v.count)]

    def __repr__(self) -> str:
        return (
            f"Recipe({self.config.name!r}, views={self.view_sizes}, colour={self.config.colour!r}, "
            f"decode={self.config.decode!r})"
        )

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def num_views(self) -> int:
        return len(self._kind)

    @property
    def output_key(self) -> str:
        """``image`` for single-view recipes, ``views`` for multi-view ones."""
        return "image" if self.num_views == 1 else "views"

    @property
    def view_sizes(self) -> list[tuple[int, int]]:
        return [(self.config.views[k].size, self.config.views[k].size) for k in self._kind]

    @property
    def colour_on_cpu(self) -> bool:
        return self.config.colour == "cpu"

    @property
    def decode_on_device(self) -> bool:
        return self.config.decode == "device"

    def with_colour(self, where: str) -> Recipe:
        """A copy whose colour ops run on ``"cpu"`` (in the worker) or ``"device"`` (in device_stage)."""
        return self.with_options(colour=where)

    def with_options(self, *, colour: str | None = None, decode: str | None = None) -> Recipe:
        """A copy with ``colour`` and/or ``decode`` replaced (checked as in a YAML file)."""
        cfg = copy.deepcopy(self.config)
        if colour is not None:
            cfg.colour = colour
        if decode is not None:
            cfg.decode = decode
        cfg.__post_init__()
        return Recipe(cfg)

    # -- worker side ---------------------------------------------------------------------------------------
    def __call__(
        self, data: bytes, ext: str = "jpg", rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        """Encoded image → ``{"image": uint8 3xHxW}`` or ``{"views": [uint8 3xHxW, ...]}``.

        Raises ``DecodeError`` for a corrupt image. Deterministic given ``rng``. Always decodes here (with
        ``decode: device`` too: the same crops the device stage would cut).
        """
        out = self._cpu_sample(data, ext, rng)
        params = out.pop(DEFERRED_COLOUR, None)
        if params is not None:
            key = self.output_key
            views = [out[key]] if key == "image" else out[key]
            coloured = self.apply_cpu_colour([v.unsqueeze(0) for v in views], [params])
            out[key] = coloured[0][0] if key == "image" else [v[0] for v in coloured]
        return out

    def worker_sample(
        self, data: bytes, ext: str = "jpg", rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        """What the loader's workers call per sample: like ``__call__``, but CPU colour is only drawn here
        (``out[DEFERRED_COLOUR]``) and applied to the whole batch by :meth:`finish_batch`, which runs each
        colour op once per batch instead of once per sample (per-op overhead dominated at one sample).

        With ``decode: device`` a plain JPEG is not decoded here: the result is ``out[DEVICE_SAMPLE]``, its
        bytes and crops (other images carry their decoded views in it), packed by :meth:`finish_batch`."""
        if not self.decode_on_device:
            return self._cpu_sample(data, ext, rng)
        rng = np.random.default_rng() if rng is None else rng
        src = open_image(data, self.decode_options)
        crops = [sample_crop(self.config.views[k], src.width, src.height, rng) for k in self._kind]
        if src.plain_jpeg:
            sample = DeviceSample(crops, src.orientation, src.stored_size, data=data)
        else:
            sample = DeviceSample(crops, src.orientation, src.stored_size, views=src.crops(crops))
        return {DEVICE_SAMPLE: sample}

    def _cpu_sample(
        self, data: bytes, ext: str = "jpg", rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        if rng is None:
            rng = np.random.default_rng()
        src = open_image(data, self.decode_options)
        crops = [sample_crop(self.config.views[k], src.width, src.height, rng) for k in self._kind]
        views = src.crops(crops)
        out: dict[str, Any] = {"image": views[0]} if self.num_views == 1 else {"views": views}
        if self.colour_on_cpu:
            out[DEFERRED_COLOUR] = [
                sample_colour_params(self.config.views[k], len(idx), rng) for k, idx in self._groups()
            ]
        return out

    def finish_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Apply the deferred CPU colour of a collated batch (in the worker), or pack a ``decode: device``
        batch's samples into one :class:`EncodedBatch`; a no-op otherwise."""
        samples = batch.pop(DEVICE_SAMPLE, None)
        if samples is not None:
            batch[ENCODED] = pack(samples, [size for size, _ in self.view_sizes])
            return batch
        params = batch.pop(DEFERRED_COLOUR, None)
        if params is None:
            return batch
        key = self.output_key
        views = [batch[key]] if key == "image" else list(batch[key])
        coloured = self.apply_cpu_colour(views, params)
        batch[key] = coloured[0] if key == "image" else coloured
        return batch

    def _groups(self) -> list[tuple[int, list[int]]]:
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(self._kind):
            groups.setdefault(k, []).append(i)
        return list(groups.items())

    def apply_cpu_colour(
        self, views: list[torch.Tensor], params: list[list[ColourParams]]
    ) -> list[torch.Tensor]:
        """Fused colour ops on uint8 view batches (each Bx3xHxW), in place; ``params[b][g]`` holds sample
        ``b``'s parameters for view group ``g`` (one row per view of the group). Works in chunks of
        ``cpu_chunk`` samples on an NCHW float copy: the ops run several times faster on that layout and in
        cache-sized pieces."""
        for g, (k, idx) in enumerate(self._groups()):
            spec = self.config.views[k]
            if not spec.has_colour:
                continue
            for j, i in enumerate(idx):
                view = views[i]
                rows = ColourParams.concat([p[g].subset(slice(j, j + 1)) for p in params])
                for start in range(0, view.shape[0], self.cpu_chunk):
                    sl = slice(start, start + self.cpu_chunk)
                    x = view[sl].to(torch.float32, memory_format=torch.contiguous_format)
                    y = apply_colour(x, rows.subset(sl), spec, scale=255.0)
                    view[sl].copy_(y.add_(0.5))  # round half up (values are >= 0) back into the uint8 batch
        return views

    def _finish(self, x: torch.Tensor, normalize_output: bool) -> torch.Tensor:
        """float [0, 255] → normalised (or [0, 1]); the 1/255 is folded into the normalisation."""
        if not normalize_output:
            return x.div_(255.0)
        mean = tuple(255.0 * m for m in self.config.mean)
        return normalize(x, mean, tuple(255.0 * s for s in self.config.std), inplace=True)

    # -- device side ---------------------------------------------------------------------------------------
    def device_stage(
        self,
        batch: dict[str, Any],
        device: torch.device | str = "cpu",
        *,
        generator: np.random.Generator | int | None = None,
        normalize_output: bool = True,
    ) -> dict[str, Any]:
        """Colour (unless done on the CPU already) and normalisation of a collated batch, on ``device``.

        ``batch["image"]`` is Bx3xHxW uint8, or ``batch["views"]`` a list of those. Returns a shallow copy of
        the batch with float32 tensors on ``device``. Pass ``generator`` (a numpy Generator or a seed, e.g.
        derived from seed, epoch and step) for reproducible parameters.
        """
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
        key = self.output_key
        if ENCODED in batch:
            batch = self._decode_on_device(batch, device)
        if key not in batch:
            raise KeyError(f"recipe {self.name!r} expects batch[{key!r}]; batch has {sorted(batch)}")
        views = [batch[key]] if key == "image" else list(batch[key])
        if len(views) != self.num_views:
            raise ValueError(f"recipe {self.name!r} makes {self.num_views} views, batch has {len(views)}")
        out_views: list[torch.Tensor] = [torch.empty(0)] * len(views)
        for k, idx in self._groups():
            spec = self.config.views[k]
            if torch.device(device).type == "cpu":
                self._cpu_stage(views, idx, spec, rng, normalize_output, out_views)
                continue
            # On an accelerator, the whole group at once.
            x = torch.cat([views[i].to(device, non_blocking=True) for i in idx]).to(torch.float32)
            params = sample_colour_params(spec, x.shape[0], rng)
            if not self.colour_on_cpu and spec.has_colour:
                x = apply_colour(x, params, spec, scale=255.0)
            x = self._finish(x, normalize_output)
            for j, part in enumerate(x.split([views[i].shape[0] for i in idx])):
                out_views[idx[j]] = part
        result = dict(batch)
        result[key] = out_views[0] if key == "image" else out_views
        return result

    def _decode_on_device(self, batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
        """Decode a ``decode: device`` batch into uint8-valued float views on ``device``. A sample that no
        decoder can read is replaced by the nearest decodable one of the batch (later first, then earlier),
        views, key and metadata alike, and reported under ``DECODE_STATS`` for the loader to count."""
        enc: EncodedBatch = batch[ENCODED]
        views, bad = decode_views(enc, [size for size, _ in self.view_sizes], device, self.decode_options)
        result = {k: v for k, v in batch.items() if k != ENCODED}
        if bad:
            bad_rows = {row for row, _ in bad}
            good = [r for r in range(enc.size) if r not in bad_rows]
            if not good:
                raise DecodeError(
                    "corrupt",
                    f"no sample of this batch could be decoded (keys {batch.get('__key__', [])[:5]})",
                )
            for name in ("__key__", "__url__", "json"):
                if isinstance(result.get(name), list):
                    result[name] = list(result[name])
            stats: dict[str, Any] = {"errors": len(bad), "bad": [], "substituted": []}
            for row, err in bad:
                later = [g for g in good if g > row]
                donor = later[0] if later else good[-1]
                for v in views:
                    v[row].copy_(v[donor])
                keys = result.get("__key__") or [str(r) for r in range(enc.size)]
                urls = result.get("__url__") or [""] * enc.size
                stats["bad"].append(
                    {
                        "key": keys[row],
                        "url": urls[row],
                        "reason": reason_of(err),
                        "detail": str(err)[:200],
                    }
                )
                stats["substituted"].append([keys[row], keys[donor]])
                for name in ("__key__", "__url__", "json"):
                    if isinstance(result.get(name), list):
                        result[name][row] = result[name][donor]
            result[DECODE_STATS] = stats
        result[self.output_key] = views[0] if self.output_key == "image" else views
        return result

    def _host_buffers(self) -> BufferPool:
        """Reused buffers for the CPU device stage's float batches (see :mod:`pass_wds.buffers`); made in the
        process that runs the stage, never pickled."""
        pool = self.__dict__.get("_pool")
        if pool is None:
            pool = self.__dict__["_pool"] = BufferPool()
        return pool  # type: ignore[no-any-return]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_pool"}

    def _cpu_stage(
        self,
        views: list[torch.Tensor],
        idx: list[int],
        spec: ViewConfig,
        rng: np.random.Generator,
        normalize_output: bool,
        out_views: list[torch.Tensor],
    ) -> None:
        """The device stage on the CPU: each view becomes one NCHW float32 tensor, filled and finished chunk
        by chunk in place (per-channel ops on NCHW run several times faster than on the channels-last
        batches the workers send, and no intermediate batch-sized tensor is made)."""
        params = sample_colour_params(spec, sum(views[i].shape[0] for i in idx), rng)
        offset = 0
        for i in idx:
            view = views[i]
            out = self._host_buffers().empty(view.shape, torch.float32)
            for start in range(0, view.shape[0], self.cpu_chunk):
                part = out[start : start + self.cpu_chunk]
                part.copy_(view[start : start + self.cpu_chunk])
                if not self.colour_on_cpu and spec.has_colour:
                    rows = params.subset(slice(offset + start, offset + start + len(part)))
                    part.copy_(apply_colour(part, rows, spec, scale=255.0))
                self._finish(part, normalize_output)
            out_views[i] = out
            offset += view.shape[0]


class CallableRecipe:
    """A user callable as a recipe.

    * ``fn(data: bytes, ext: str, rng: numpy.random.Generator) -> dict`` (three parameters) is called as is;
    * any other callable is treated as a transform of the decoded upright RGB ``PIL.Image`` (e.g. a
      torchvision ``Compose``) whose result (a tensor, a PIL image, or a list of them for multi-view) becomes
      ``{"image": ...}`` or ``{"views": [...]}``. Torch's global RNG is seeded from ``rng`` for the call only
      (``fork_rng``), so torchvision transforms are deterministic given ``rng`` too.

    ``device_stage`` moves tensors to the device, turns uint8 into float [0, 1] and normalises them with
    ``mean``/``std``; float tensors are taken as already normalised.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        decode_options: DecodeOptions | None = None,
    ) -> None:
        self.fn = fn
        self.mean, self.std = mean, std
        self.decode_options = decode_options or DecodeOptions()
        self.name = getattr(fn, "__name__", type(fn).__name__)
        try:
            params = [
                p
                for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            self.raw = len(params) >= 3
        except (TypeError, ValueError):
            self.raw = False

    def __repr__(self) -> str:
        return f"CallableRecipe({self.fn!r}, raw={self.raw})"

    @staticmethod
    def _as_tensor(x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x
        arr = np.asarray(x)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()

    def __call__(
        self, data: bytes, ext: str = "jpg", rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        if rng is None:
            rng = np.random.default_rng()
        if self.raw:
            result = self.fn(data, ext, rng)
            if not isinstance(result, dict):
                raise TypeError(
                    f"recipe callable {self.name} must return a dict, got {type(result).__name__}"
                )
            return result
        img = decode_rgb(data, options=self.decode_options)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(0, 2**63 - 1)))
            result = self.fn(img)
        if isinstance(result, list | tuple):
            return {"views": [self._as_tensor(v) for v in result]}
        return {"image": self._as_tensor(result)}

    def device_stage(
        self,
        batch: dict[str, Any],
        device: torch.device | str = "cpu",
        *,
        generator: np.random.Generator | int | None = None,
        normalize_output: bool = True,
    ) -> dict[str, Any]:
        def prep(x: torch.Tensor) -> torch.Tensor:
            x = x.to(device, non_blocking=True)
            if x.dtype == torch.uint8:
                x = x.float().div_(255.0)
                if normalize_output:
                    x = normalize(x, self.mean, self.std)
            return x

        result = dict(batch)
        if "image" in batch and isinstance(batch["image"], torch.Tensor):
            result["image"] = prep(batch["image"])
        if "views" in batch:
            result["views"] = [prep(v) for v in batch["views"]]
        return result


def load_recipe(
    spec: str | Path | dict[str, Any] | RecipeConfig | Recipe | CallableRecipe | Callable[..., Any] | None,
    *,
    colour: str | None = None,
    decode: str | None = None,
) -> Recipe | CallableRecipe:
    """Resolve a recipe: a built-in name (``eval``, ``simclr``, ``mocov2``, ``byol``, ``dino``, ``swav``; read
    from ``pass_wds/augment/recipes/<name>.yaml``), a YAML path, a mapping, a config, a Recipe, or a user
    callable (wrapped in :class:`CallableRecipe`). ``colour`` overrides where colour runs (``device``/``cpu``),
    ``decode`` how images are decoded (``accurate``/``fast``/``device``). ``None`` means ``eval``."""
    if spec is None:
        spec = "eval"
    recipe: Recipe | CallableRecipe
    if isinstance(spec, Recipe | CallableRecipe):
        recipe = spec
    elif isinstance(spec, RecipeConfig):
        recipe = Recipe(copy.deepcopy(spec))
    elif isinstance(spec, dict):
        recipe = Recipe(RecipeConfig.from_mapping(spec))
    elif isinstance(spec, str | Path):
        text = str(spec)
        path = Path(text)
        if text in BUILTIN_RECIPES and not path.is_file():
            cfg = builtin_config(text)
        elif path.suffix in (".yaml", ".yml") or path.is_file():
            if not path.is_file():
                raise ConfigError(f"recipe file not found: {text}")
            cfg = RecipeConfig.from_mapping(load_yaml(path), source=text)
        else:
            raise ConfigError(
                f"unknown recipe {text!r}: give one of {', '.join(BUILTIN_RECIPES)}, a YAML path, or a "
                f"callable{did_you_mean(text, BUILTIN_RECIPES)}"
            )
        recipe = Recipe(cfg)
    elif callable(spec):
        recipe = CallableRecipe(spec)
    else:
        raise ConfigError(f"cannot use {type(spec).__name__} as a recipe")
    for name, value in (("colour", colour), ("decode", decode)):
        if value is None:
            continue
        if not isinstance(recipe, Recipe):
            raise ConfigError(f"{name}= applies to built-in/YAML recipes, not to user callables")
        if getattr(recipe.config, name) != value:
            recipe = recipe.with_options(**{name: value})
    return recipe
