"""Shard discovery and per-shard sample indexes.

The loader plans every epoch from per-shard sample counts alone, so the main process only needs counts
(``index.json`` gives them for free). Workers load the full per-sample layout (member offsets and sizes, from
the DALI ``.idx`` beside a shard, or from one header scan for foreign shards) only for the shards they read.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import braceexpand

from pass_wds import storage
from pass_wds.format import tar
from pass_wds.format.errors import ShardError
from pass_wds.format.idx import ShardIndex, group_samples, idx_url_for, is_gzip_name, parse_idx
from pass_wds.format.manifest import ShardInfo, is_index_url, read_index_json


def _is_gzip(url: str, storage_options: dict[str, Any] | None) -> bool:
    if is_gzip_name(url):
        return True
    with storage.open_stream(url, 0, 2, storage_options) as f:
        return f.read(2) == b"\x1f\x8b"


def scan_tar(
    url: str, storage_options: dict[str, Any] | None = None, compressed: bool | None = None
) -> ShardIndex:
    """Read every header of a shard once (sequentially; gzip allowed) and return its sample layout.

    Uses the format's one header parser. Directories, links and other non-regular members are skipped, as
    WebDataset does.
    """
    if compressed is None:
        compressed = _is_gzip(url, storage_options)
    entries: list[tuple[str, int, int]] = []
    try:
        with storage.open_stream(url, 0, None, storage_options) as raw:
            f: IO[bytes] = gzip.GzipFile(fileobj=raw) if compressed else raw  # type: ignore[assignment]
            total = None if compressed else storage.file_size(url, storage_options)
            for entry in tar.scan_tar(f, total):
                if entry.isreg:
                    entries.append((entry.name, entry.offset_data, entry.size))
    except (tar.TarDamaged, EOFError, OSError, zlib.error) as e:
        raise ShardError(f"{storage.redact(url)}: cannot read as a tar shard: {e}") from None
    return group_samples(entries)


def load_shard_index(shard: ShardInfo, storage_options: dict[str, Any] | None = None) -> ShardIndex:
    """The sample layout of a shard: kept from the scan, else read from its ``.idx`` (count checked)."""
    if shard.index is not None:
        return shard.index
    if shard.idx_url is None:
        return scan_tar(shard.url, storage_options, shard.compressed)
    index = _read_idx(shard.idx_url, storage_options)
    if len(index) != shard.nsamples:
        raise ShardError(f"{shard.idx_url}: {len(index)} samples, but the shard list says {shard.nsamples}")
    return index


def _read_idx(url: str, storage_options: dict[str, Any] | None) -> ShardIndex:
    try:
        raw = storage.read_bytes(url, storage_options)
    except (OSError, FileNotFoundError) as e:
        raise ShardError(f"{url}: cannot read index: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ShardError(f"{url}: not a DALI .idx file (not text)") from None
    return parse_idx(text, url)


def expand_urls(source: str | Sequence[str]) -> list[str]:
    """A brace pattern (``shard-{000..009}.tar``), a single URL, or a list of either."""
    items = [source] if isinstance(source, str) else list(source)
    urls: list[str] = []
    for item in items:
        urls.extend(braceexpand.braceexpand(item) if re.search(r"\{.*\}", item) else [item])
    return urls


def _resolve_one(url: str, storage_options: dict[str, Any] | None, allow_external: bool) -> list[ShardInfo]:
    if is_index_url(url):
        return read_index_json(url, storage_options, allow_external_urls=allow_external)
    compressed = is_gzip_name(url)
    idx_url = idx_url_for(url)
    if not compressed and idx_url is not None and storage.exists(idx_url, storage_options):
        index = _read_idx(idx_url, storage_options)
        return [ShardInfo(url, len(index), idx_url)]
    if not storage.exists(url, storage_options):
        raise ShardError(f"shard not found: {url}")
    compressed = compressed or _is_gzip(url, storage_options)
    index = scan_tar(url, storage_options, compressed)
    return [ShardInfo(url, len(index), None, compressed=compressed, index=index)]


def resolve_source(
    source: str | Sequence[str],
    storage_options: dict[str, Any] | None = None,
    threads: int = 16,
    *,
    allow_external_urls: bool = False,
) -> list[ShardInfo]:
    """Turn an ``index.json`` URL, a brace pattern or a URL list into shards with sample counts.

    Counts come from ``index.json``, else from the ``.idx`` beside each shard, else from one header scan
    (kept, so workers do not scan again). Shards are looked up in parallel threads (object-store latency).
    An ``index.json`` may only name shards inside its own folder unless ``allow_external_urls``.
    """
    if isinstance(source, str) and is_index_url(source):
        shards = read_index_json(source, storage_options, allow_external_urls=allow_external_urls)
    else:
        urls = expand_urls(source)
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(urls)))) as pool:
            shards = [
                s
                for found in pool.map(lambda u: _resolve_one(u, storage_options, allow_external_urls), urls)
                for s in found
            ]
    if not shards:
        raise ShardError(f"no shards in {source!r}")
    if sum(s.nsamples for s in shards) == 0:
        raise ShardError(f"the shards of {source!r} contain no samples")
    return shards
