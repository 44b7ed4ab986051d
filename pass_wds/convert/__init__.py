"""make-shards: raw images + a metadata allowlist → size-balanced, globally shuffled WebDataset shards.

One module per concept, as in :mod:`pass_wds.loading`:

* :mod:`.options` — :class:`ConvertConfig`, its checks, which options change the output
* :mod:`.inputs` — expand and list raw tars and image folders (never extracted) → a columnar ``Listing``
* :mod:`.metadata` — read the allowlist (CSV/TSV, JSON Lines, JSON, Parquet) into :mod:`.rows`' ``Metadata``
* :mod:`.planning` — pure: keys + sizes + seed → a byte-balanced, shuffled ``ShardPlan``
* :mod:`.prepare` — the cheap checks, the listing as tasks, the join, the plan and its digest
* :mod:`.writing` — one shard = one task: read by offset, check the image, write tar + ``.idx`` + sha256
* :mod:`.output` — the output lock, what the output owns, resume records
* :mod:`.finish` — side files, stats, croissant, then ``index.json`` last
* :mod:`.report` — progress, the summary, the ``--dry-run`` description
* :mod:`.executors` — where tasks run: local processes or Dask (local or Slurm)
* :mod:`.make` — :func:`make_shards` puts them together

Importing this package is cheap (the CLI does it at start-up); the work imports NumPy, Arrow and Pillow only
when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pass_wds.convert.options import ConvertConfig

if TYPE_CHECKING:
    from pass_wds.convert.make import dry_run, make_shards
    from pass_wds.convert.report import Summary


def __getattr__(name: str) -> Any:
    if name in ("make_shards", "dry_run"):
        from pass_wds.convert import make

        return getattr(make, name)
    if name == "Summary":
        from pass_wds.convert.report import Summary

        return Summary
    raise AttributeError(f"module 'pass_wds.convert' has no attribute {name!r}")


__all__ = ["ConvertConfig", "Summary", "dry_run", "make_shards"]
