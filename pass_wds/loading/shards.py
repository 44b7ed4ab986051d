"""Shard discovery and per-shard sample indexes.

The loader plans every epoch from per-shard sample counts alone, so the main process only needs counts
(``index.json`` gives them for free). Workers load the full per-sample layout (member offsets and sizes, from
the DALI ``.idx`` beside a shard, or from one header scan for foreign shards) only for the shards they read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pass_wds.dataset import Dataset, expand_urls, read_idx, resolve, scan_tar
from pass_wds.format.errors import ShardError
from pass_wds.format.idx import ShardIndex
from pass_wds.format.manifest import ShardInfo
from pass_wds.storage.retry import RetryPolicy

__all__ = ["expand_urls", "load_shard_index", "resolve_dataset", "resolve_source", "scan_tar"]


def load_shard_index(
    shard: ShardInfo, storage_options: dict[str, Any] | None = None, retry: RetryPolicy | None = None
) -> ShardIndex:
    """The sample layout of a shard: kept from the scan, else read from its ``.idx`` (count checked)."""
    if shard.index is not None:
        return shard.index
    if shard.idx_url is None:
        return scan_tar(shard.url, storage_options, shard.compressed, retry=retry)
    index = read_idx(shard.idx_url, storage_options, retry)
    if len(index) != shard.nsamples:
        raise ShardError(f"{shard.idx_url}: {len(index)} samples, but the shard list says {shard.nsamples}")
    return index


def resolve_dataset(
    source: str | Sequence[str],
    storage_options: dict[str, Any] | None = None,
    threads: int = 16,
    *,
    allow_external_urls: bool = False,
    allow_raw_archives: bool = False,
    retry: RetryPolicy | None = None,
) -> Dataset:
    """:func:`resolve_source` with the manifest kept (its revision and history, for resumes across revisions)."""
    return resolve(
        source,
        storage_options,
        threads=threads,
        allow_external_urls=allow_external_urls,
        allow_raw_archives=allow_raw_archives,
        retry=retry,
    )


def resolve_source(
    source: str | Sequence[str],
    storage_options: dict[str, Any] | None = None,
    threads: int = 16,
    *,
    allow_external_urls: bool = False,
    allow_raw_archives: bool = False,
    retry: RetryPolicy | None = None,
) -> list[ShardInfo]:
    """The shards of a dataset source, with sample counts (see :func:`pass_wds.dataset.resolve`); an
    ``index.json`` may only name shards inside its own folder unless ``allow_external_urls``, and raw image
    archives are refused unless ``allow_raw_archives``."""
    return resolve_dataset(
        source,
        storage_options,
        threads,
        allow_external_urls=allow_external_urls,
        allow_raw_archives=allow_raw_archives,
        retry=retry,
    ).shards
