"""Recipe configs: dataclasses that map 1:1 onto recipe YAML files (the built-in ones in ``recipes/``, package
data, are the only definition of the published parameters), checked when built. No torch: a config or a YAML
file is checked before any worker starts (this module imports no torch)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pass_wds.config import ConfigError, from_dict, load_yaml
from pass_wds.errors import did_you_mean

DECODE_MODES = ("accurate", "fast", "device")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RECIPE_DIR = Path(__file__).resolve().parent / "recipes"  # package data: one YAML file per built-in recipe
BUILTIN_RECIPES = tuple(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair of numbers, got {value!r}") from None
    if lo > hi:
        raise ConfigError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return lo, hi


@dataclass
class ViewConfig:
    """One kind of view (``count`` identical-parameter copies). Probabilities are per sample."""

    count: int = 1
    size: int = 224
    crop: str = "random_resized"  # or "center"
    resize: int | None = None  # center crop: shorter side resized to this first (eval: 256)
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bilinear"  # or "bicubic"
    flip_p: float = 0.5
    jitter_p: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 23
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5  # on the [0, 1] scale; pixels >= threshold are inverted

    def __post_init__(self) -> None:
        self.scale = _pair(self.scale, "scale")
        self.ratio = _pair(self.ratio, "ratio")
        self.blur_sigma = _pair(self.blur_sigma, "blur_sigma")
        if self.count < 1 or self.size < 1:
            raise ConfigError(f"view count and size must be >= 1, got count={self.count} size={self.size}")
        if self.crop not in ("random_resized", "center"):
            raise ConfigError(f"view crop must be random_resized or center, got {self.crop!r}")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ConfigError(f"interpolation must be bilinear or bicubic, got {self.interpolation!r}")
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise ConfigError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if self.ratio[0] <= 0:
            raise ConfigError(f"ratio must be positive, got {self.ratio}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {p}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"hue must be in [0, 0.5], got {self.hue}")
        if self.blur_p > 0 and (self.blur_kernel < 3 or self.blur_kernel % 2 == 0):
            raise ConfigError(f"blur_kernel must be odd and >= 3, got {self.blur_kernel}")
        if self.blur_sigma[0] <= 0:
            raise ConfigError(f"blur_sigma must be positive, got {self.blur_sigma}")

    @property
    def has_colour(self) -> bool:
        return self.jitter_p > 0 or self.grayscale_p > 0 or self.blur_p > 0 or self.solarize_p > 0


@dataclass
class RecipeConfig:
    """A whole recipe; maps 1:1 onto a YAML file such as the built-in ones in ``pass_wds/augment/recipes/``."""

    name: str = "custom"
    views: list[ViewConfig] = field(default_factory=lambda: [ViewConfig()])
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    colour: str = "device"  # "device": colour in device_stage; "cpu": fused colour in the worker
    decode: str = "accurate"  # "accurate" | "fast" (worker) | "device" (batched, in device_stage)
    max_pixels: int = 89_478_485
    alpha_background: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self) -> None:
        views = []
        for i, v in enumerate(self.views):
            if isinstance(v, ViewConfig):
                views.append(v)
            elif isinstance(v, dict):
                views.append(from_dict(ViewConfig, v, source=f"recipe {self.name!r} view {i}"))
            else:
                raise ConfigError(f"recipe {self.name!r}: view {i} must be a mapping, got {type(v).__name__}")
        if not views:
            raise ConfigError(f"recipe {self.name!r} has no views")
        self.views = views
        self.mean = tuple(float(x) for x in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(x) for x in self.std)  # type: ignore[assignment]
        self.alpha_background = tuple(int(x) for x in self.alpha_background)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"recipe {self.name!r}: mean and std need 3 values, std > 0")
        if self.colour not in ("device", "cpu"):
            raise ConfigError(f"recipe {self.name!r}: colour must be 'device' or 'cpu', got {self.colour!r}")
        if self.decode not in DECODE_MODES:
            raise ConfigError(
                f"recipe {self.name!r}: decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}"
            )
        if self.decode == "device" and self.colour == "cpu":
            raise ConfigError(
                f"recipe {self.name!r}: decode 'device' decodes in the device stage, so colour must run there "
                "too (colour: device), not in the worker (colour: cpu)"
            )

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "recipe") -> RecipeConfig:
        return from_dict(cls, data, source=source)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def builtin_config(name: str) -> RecipeConfig:
    """A built-in recipe's config, read from its YAML file in the package (``pass_wds/augment/recipes/``,
    shipped as package data), the only definition of the published parameters; sources in each file."""
    if name not in BUILTIN_RECIPES:
        raise ConfigError(
            f"unknown recipe {name!r}; built-in recipes: {', '.join(BUILTIN_RECIPES)}"
            + did_you_mean(name, BUILTIN_RECIPES)
        )
    path = RECIPE_DIR / f"{name}.yaml"
    return RecipeConfig.from_mapping(load_yaml(path), source=str(path))
