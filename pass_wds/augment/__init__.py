"""Augmentation recipes (eval, simclr, mocov2, byol, dino, swav, or your own): geometry in the loader's
workers, colour as a batched device stage. See docs/augment.md."""

from pass_wds.augment.colour import ColourParams, apply_colour, gaussian_blur, sample_colour_params
from pass_wds.augment.geometry import sample_crop
from pass_wds.augment.recipes import (
    BUILTIN_RECIPES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CallableRecipe,
    Recipe,
    RecipeConfig,
    RecipeLike,
    ViewConfig,
    builtin_config,
    load_recipe,
)

__all__ = [
    "BUILTIN_RECIPES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CallableRecipe",
    "ColourParams",
    "Recipe",
    "RecipeConfig",
    "RecipeLike",
    "ViewConfig",
    "apply_colour",
    "builtin_config",
    "gaussian_blur",
    "load_recipe",
    "sample_colour_params",
    "sample_crop",
]
