"""``pass-wds preview``: a contact sheet of a source, or of a recipe's views (see :mod:`pass_wds.preview`)."""

from __future__ import annotations

import argparse
from typing import Any

from pass_wds.cli.common import (
    add_allow_raw_archives,
    add_retry_options,
    add_source,
    add_storage_options,
    source_arg,
)
from pass_wds.config import ConfigError


def cmd_preview(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ConfigError(f"-n/--samples: must be >= 1, got {args.n}")
    if args.thumb < 32:
        raise ConfigError(f"--thumb: must be >= 32 px, got {args.thumb}")
    if args.columns < 1:
        raise ConfigError(f"--columns: must be >= 1, got {args.columns}")
    if not args.out.lower().endswith((".png", ".jpg", ".jpeg")):
        raise ConfigError(f"--out: expected a .png or .jpg file name, got {args.out!r}")
    if args.recipe:
        from pass_wds.augment import load_recipe

        try:
            load_recipe(args.recipe)
        except (ConfigError, FileNotFoundError, ValueError) as e:
            raise ConfigError(f"--recipe: {e}") from None
    import logging

    from pass_wds.preview import preview

    logging.getLogger("pass_wds.loading").setLevel(logging.WARNING)  # the epoch remainder is not news here

    result = preview(
        source_arg(args.source),
        args.out,
        n=args.n,
        recipe=args.recipe,
        seed=args.seed,
        columns=args.columns,
        thumb=args.thumb,
        storage_options=args.storage_options,
        allow_raw_archives=args.allow_raw_archives,
        retry_seconds=args.retry_seconds,
        read_timeout=args.read_timeout,
    )
    per = f", {len(result.tiles[0])} views each" if args.recipe else ""
    print(f"wrote {args.out}: {len(result.keys)} samples{per}, {result.size[0]}×{result.size[1]} px")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "preview",
        help="draw a contact sheet of samples, or of a recipe's augmented views",
        description="Draw N samples of SOURCE into a PNG: thumbnails with key and creator (the CC-BY credit), "
        "or with --recipe each sample's augmented views side by side, exactly as the loader produces them "
        "(device stage run on the CPU, denormalised for display).",
    )
    add_source(p)
    p.add_argument("-o", "--out", required=True, metavar="FILE.png", help="where to write the picture")
    p.add_argument("-n", "--samples", dest="n", type=int, default=16, help="samples to draw (default: 16)")
    p.add_argument(
        "--recipe", help="eval | simclr | mocov2 | byol | dino | swav | recipe.yaml: draw its views instead"
    )
    p.add_argument("--seed", type=int, default=0, help="loader seed: which samples and which augmentations")
    p.add_argument("--columns", type=int, default=4, help="tiles per row of the contact sheet (default: 4)")
    p.add_argument(
        "--thumb", type=int, default=160, help="thumbnail / largest view size in px (default: 160)"
    )
    add_storage_options(p, default={})
    add_retry_options(p)
    add_allow_raw_archives(p)
    p.set_defaults(func=cmd_preview)
