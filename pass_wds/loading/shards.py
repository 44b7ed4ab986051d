"""Shard discovery and per-shard sample indexes.

The loader plans every epoch from per-shard sample counts alone, so the main process only needs counts
(``index.json`` gives them for free). Workers load the full per-sample layout (member offsets and sizes, from
the DALI ``.idx`` beside a shard, or from one header scan for foreign shards) only for the shards they read.
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import braceexpand
import numpy as np

from pass_wds import storage

IMAGE_EXTS = frozenset(
    {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm", "jp2", "avif", "heic"}
)
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class ShardError(ValueError):
    """A shard, its index or the shard list is unusable; the message names the file and the problem."""


class Member(NamedTuple):
    """One tar member of a sample: extension (``jpg``, ``json`` …), data offset and size in bytes."""

    ext: str
    offset: int
    size: int


@dataclass
class ShardIndex:
    """Per-sample layout of one shard: key and members (offsets are into the uncompressed tar)."""

    keys: list[str]
    members: list[tuple[Member, ...]]

    def __len__(self) -> int:
        return len(self.keys)

    _sizes: np.ndarray | None = field(default=None, repr=False, compare=False)

    def sample_bytes(self) -> np.ndarray:
        """Total data bytes per sample (what a shuffle buffer holds for it); computed once."""
        if self._sizes is None:
            self._sizes = np.fromiter(
                (sum(m.size for m in ms) for ms in self.members), dtype=np.int64, count=len(self)
            )
        return self._sizes


@dataclass
class ShardInfo:
    """A shard URL with its sample count; ``index`` is filled in for scanned shards (no ``.idx``)."""

    url: str
    nsamples: int
    idx_url: str | None = None
    compressed: bool = False
    filesize: int | None = None
    sha256: str | None = None
    index: ShardIndex | None = field(default=None, repr=False)


def split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the basename, extension = the rest."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]


def group_samples(entries: Iterable[tuple[str, int, int]]) -> ShardIndex:
    """Group ``(member name, data offset, size)`` runs sharing a key into samples, in tar order."""
    keys: list[str] = []
    members: list[tuple[Member, ...]] = []
    current: list[Member] = []
    current_key: str | None = None
    for name, offset, size in entries:
        key, ext = split_key(name)
        if key != current_key:
            if current_key is not None:
                keys.append(current_key)
                members.append(tuple(current))
            current_key, current = key, []
        current.append(Member(ext, offset, size))
    if current_key is not None:
        keys.append(current_key)
        members.append(tuple(current))
    return ShardIndex(keys, members)


def parse_idx(text: str, source: str = "<idx>") -> ShardIndex:
    """Parse a DALI ``.idx`` v1.2 file: ``v1.2 N`` then per sample ``ext offset size [name]`` groups."""
    lines = text.splitlines()
    if not lines:
        raise ShardError(f"{source}: empty index file")
    head = lines[0].split()
    if len(head) != 2 or head[0] != "v1.2" or not head[1].isdigit():
        raise ShardError(f"{source}: not a DALI v1.2 index (first line {lines[0][:40]!r})")
    n = int(head[1])
    body = [ln for ln in lines[1:] if ln.strip()]
    if len(body) != n:
        raise ShardError(f"{source}: header says {n} samples but {len(body)} sample lines follow")
    keys: list[str] = []
    members: list[tuple[Member, ...]] = []
    for i, line in enumerate(body):
        tok = line.split()
        n_tok = len(tok)
        # Groups of 4 (ext offset size name) or of 3 (ext offset size): in 4-groups token 4 is an extension.
        width = 3 if n_tok % 4 else 4 if n_tok % 3 or not tok[4].isdigit() else 3
        if not tok or n_tok % width:
            raise ShardError(f"{source}: sample line {i + 2} is malformed: {line[:80]!r}")
        try:
            ms = tuple([Member(tok[j], int(tok[j + 1]), int(tok[j + 2])) for j in range(0, n_tok, width)])
        except ValueError:
            raise ShardError(f"{source}: sample line {i + 2} has a non-integer offset/size") from None
        keys.append(split_key(tok[3])[0] if width == 4 else f"{i:09d}")
        members.append(ms)
    return ShardIndex(keys, members)


def _is_gzip(url: str, storage_options: dict[str, Any] | None) -> bool:
    if url.endswith((".tgz", ".gz")):
        return True
    with storage.open_stream(url, 0, 2, storage_options) as f:
        return f.read(2) == b"\x1f\x8b"


def scan_tar(
    url: str, storage_options: dict[str, Any] | None = None, compressed: bool | None = None
) -> ShardIndex:
    """Read every header of a shard once (sequentially; gzip allowed) and return its sample layout.

    Directories, links and other non-regular members are skipped, as WebDataset does.
    """
    if compressed is None:
        compressed = _is_gzip(url, storage_options)
    entries: list[tuple[str, int, int]] = []
    try:
        with (
            storage.open_stream(url, 0, None, storage_options) as raw,
            tarfile.open(fileobj=raw, mode="r|gz" if compressed else "r|") as tf,
        ):
            for m in tf:
                if m.isreg():
                    entries.append((m.name, m.offset_data, m.size))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardError(f"{url}: cannot read as a tar shard: {e}") from None
    return group_samples(entries)


def idx_url_for(url: str) -> str:
    for suffix in _TAR_SUFFIXES:
        if url.endswith(suffix):
            return url[: -len(suffix)] + ".idx"
    return url + ".idx"


def load_shard_index(shard: ShardInfo, storage_options: dict[str, Any] | None = None) -> ShardIndex:
    """The sample layout of a shard: kept from the scan, else read from its ``.idx`` (count checked)."""
    if shard.index is not None:
        return shard.index
    if shard.idx_url is None:
        return scan_tar(shard.url, storage_options, shard.compressed)
    try:
        text = storage.read_text(shard.idx_url, storage_options)
    except (OSError, FileNotFoundError) as e:
        raise ShardError(f"{shard.idx_url}: cannot read index: {e}") from None
    index = parse_idx(text, shard.idx_url)
    if len(index) != shard.nsamples:
        raise ShardError(f"{shard.idx_url}: {len(index)} samples, but the shard list says {shard.nsamples}")
    return index


def _join_relative(base_dir: str, url: str) -> str:
    if "://" in url or url.startswith("/"):
        return url
    if storage.is_local(base_dir) and not base_dir.startswith("file://"):
        return posixpath.normpath(posixpath.join(base_dir, url)) if base_dir else url
    return posixpath.join(base_dir.rstrip("/"), url)


def _dirname(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else ""


def read_index_json(url: str, storage_options: dict[str, Any] | None = None) -> list[ShardInfo]:
    """Shards of a wids ``index.json`` (URLs relative to its folder); ``nsamples`` is required."""
    try:
        data = json.loads(storage.read_bytes(url, storage_options))
    except (OSError, FileNotFoundError) as e:
        raise ShardError(f"{url}: cannot read shard index: {e}") from None
    except ValueError as e:
        raise ShardError(f"{url}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("shardlist"), list):
        raise ShardError(f"{url}: no 'shardlist' list (expected a wids-shard-index-v1 file)")
    base = _dirname(url)
    shards = []
    for i, entry in enumerate(data["shardlist"]):
        if not isinstance(entry, dict) or "url" not in entry or "nsamples" not in entry:
            raise ShardError(f"{url}: shardlist[{i}] needs 'url' and 'nsamples'")
        shard_url = _join_relative(base, str(entry["url"]))
        idx = entry.get("idx")
        idx_url = _join_relative(base, str(idx)) if idx else idx_url_for(shard_url)
        nsamples = int(entry["nsamples"])
        if nsamples < 0:
            raise ShardError(f"{url}: shardlist[{i}] has negative nsamples")
        shards.append(
            ShardInfo(
                shard_url,
                nsamples,
                idx_url,
                compressed=shard_url.endswith((".tgz", ".gz")),
                filesize=int(entry["filesize"]) if entry.get("filesize") is not None else None,
                sha256=entry.get("sha256"),
            )
        )
    return shards


def expand_urls(source: str | Sequence[str]) -> list[str]:
    """A brace pattern (``shard-{000..009}.tar``), a single URL, or a list of either."""
    items = [source] if isinstance(source, str) else list(source)
    urls: list[str] = []
    for item in items:
        urls.extend(braceexpand.braceexpand(item) if re.search(r"\{.*\}", item) else [item])
    return urls


def _resolve_one(url: str, storage_options: dict[str, Any] | None) -> list[ShardInfo]:
    if url.endswith(".json"):
        return read_index_json(url, storage_options)
    compressed = url.endswith((".tgz", ".gz"))
    idx_url = idx_url_for(url)
    if not compressed and storage.exists(idx_url, storage_options):
        index = parse_idx(storage.read_text(idx_url, storage_options), idx_url)
        return [ShardInfo(url, len(index), idx_url)]
    if not storage.exists(url, storage_options):
        raise ShardError(f"shard not found: {url}")
    compressed = compressed or _is_gzip(url, storage_options)
    index = scan_tar(url, storage_options, compressed)
    return [ShardInfo(url, len(index), None, compressed=compressed, index=index)]


def resolve_source(
    source: str | Sequence[str], storage_options: dict[str, Any] | None = None, threads: int = 16
) -> list[ShardInfo]:
    """Turn an ``index.json`` URL, a brace pattern or a URL list into shards with sample counts.

    Counts come from ``index.json``, else from the ``.idx`` beside each shard, else from one header scan
    (kept, so workers do not scan again). Shards are looked up in parallel threads (object-store latency).
    """
    if isinstance(source, str) and source.endswith(".json"):
        shards = read_index_json(source, storage_options)
    else:
        urls = expand_urls(source)
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(urls)))) as pool:
            shards = [
                s for found in pool.map(lambda u: _resolve_one(u, storage_options), urls) for s in found
            ]
    if not shards:
        raise ShardError(f"no shards in {source!r}")
    if sum(s.nsamples for s in shards) == 0:
        raise ShardError(f"the shards of {source!r} contain no samples")
    return shards


def iter_tar_samples(fileobj: Any, compressed: bool = False) -> Iterator[dict[str, Any]]:
    """Stream any tar (file object) as WebDataset sample dicts ``{"__key__", ext: bytes, …}``."""
    with tarfile.open(fileobj=fileobj, mode="r|gz" if compressed else "r|") as tf:
        sample: dict[str, Any] = {}
        for m in tf:
            if not m.isreg():
                continue
            key, ext = split_key(m.name)
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            f = tf.extractfile(m)
            sample.setdefault("__key__", key)
            sample[ext] = f.read() if f is not None else b""
        if sample:
            yield sample
