"""What "a dataset source" means, everywhere (loader, ``bench``, ``verify``, ``inspect``, ``urls``, ``preview``).

A source is an output folder or bucket prefix, its ``index.json``, a glob (``out/*.tar``), a brace pattern
(``out/pass-{000000..000009}.tar``), one shard, or a list of any of these; local or remote. :func:`resolve`
turns it into shards with sample counts (``index.json``, else the ``.idx`` beside each shard, else one header
scan). No torch here: commands that only read the format start fast. Errors say what was found and what was
expected.
"""

from __future__ import annotations

import gzip
import logging
import posixpath
import re
import urllib.parse
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import braceexpand

from pass_wds import storage
from pass_wds.format import tar
from pass_wds.format.errors import ShardError
from pass_wds.format.idx import ShardIndex, group_samples, idx_url_for, is_gzip_name, parse_idx
from pass_wds.format.manifest import INDEX, KIND, MIN_SAMPLE_BYTES, ManifestError, ShardInfo, read_index_json
from pass_wds.format.samples import IMAGE_EXTS

SHARD_EXTENSIONS = (".tar", ".tgz", ".tar.gz")
_GLOB = re.compile(r"[*?\[]")
_BRACE = re.compile(r"\{.*\}")
EXPECTED = (
    "expected an output folder or prefix with index.json, an index.json, .tar/.tgz shards, "
    "a glob, a brace pattern, or a list of these"
)


RAW_OPT_IN = "shards of another tool: allow_raw_archives=True, or --allow-raw-archives"
PEEK_SAMPLES = 64
"""Samples looked at to tell a raw image archive from WebDataset shards (the first of the first shard)."""

log = logging.getLogger("pass_wds.dataset")


class SourceError(ShardError):
    """A source that names no usable shards; the message says what was found and what was expected."""


class RawArchiveError(SourceError):
    """The source is raw image archives (PASS's own tars, a tarred image folder), not a converted dataset:
    reading it would train on every image, without the metadata that is the allowlist."""


@dataclass
class Dataset:
    """A resolved source: its shards, and the manifest when the source has one."""

    source: str | list[str]
    shards: list[ShardInfo]
    index_url: str | None = None
    manifest: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def folder(self) -> str | None:
        """Where the manifest and its side files live (``None`` without a manifest)."""
        return _dirname(self.index_url) if self.index_url else None

    @property
    def name(self) -> str:
        return str((self.manifest or {}).get("name") or "(shards without index.json)")

    @property
    def samples(self) -> int:
        return sum(s.nsamples for s in self.shards)


def _dirname(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def _is_shard(url: str) -> bool:
    return url.lower().endswith(SHARD_EXTENSIONS)


def _is_gzip(
    url: str, storage_options: dict[str, Any] | None, retry: storage.RetryPolicy | None = None
) -> bool:
    if is_gzip_name(url):
        return True
    with storage.open_stream(url, 0, 2, storage_options, retry=retry) as f:
        return f.read(2) == b"\x1f\x8b"


def scan_tar(
    url: str,
    storage_options: dict[str, Any] | None = None,
    compressed: bool | None = None,
    *,
    max_members: int | None = None,
    retry: storage.RetryPolicy | None = None,
) -> ShardIndex:
    """Read every header of a shard once (sequentially; gzip allowed) and return its sample layout;
    ``max_members`` stops after that many regular members (a look at the start of a shard).

    Directories, links and other non-regular members are skipped, as WebDataset does.
    """
    if compressed is None:
        compressed = _is_gzip(url, storage_options, retry)
    entries: list[tuple[str, int, int]] = []
    try:
        with storage.open_stream(url, 0, None, storage_options, retry=retry) as raw:
            f: tar.Readable = gzip.GzipFile(fileobj=raw) if compressed else raw
            total = None if compressed else storage.file_size(url, storage_options, retry=retry)
            for entry in tar.scan_tar(f, total):
                if entry.isreg:
                    entries.append((entry.name, entry.offset_data, entry.size))
                    if max_members is not None and len(entries) >= max_members:
                        break
    except storage.StorageError:
        raise  # it names the URL and the cause already
    except (tar.TarDamaged, EOFError, OSError, zlib.error) as e:
        raise ShardError(f"{storage.redact(url)}: cannot read as a tar shard: {e}") from None
    return group_samples(entries)


def expand_urls(source: str | Sequence[str]) -> list[str]:
    """A brace pattern (``shard-{000..009}.tar``), a single URL, or a list of either."""
    items = [source] if isinstance(source, str) else list(source)
    urls: list[str] = []
    for item in items:
        urls.extend(braceexpand.braceexpand(item) if _BRACE.search(item) else [item])
    return urls


def _glob(pattern: str, storage_options: dict[str, Any] | None) -> list[str]:
    fs, path = storage.get_fs(pattern, storage_options)
    proto = pattern.split("://", 1)[0] if "://" in pattern and not pattern.startswith("file://") else None
    matches = sorted(str(m) for m in fs.glob(path))
    urls = [m if proto is None or "://" in m else f"{proto}://{m}" for m in matches]
    shards = [u for u in urls if _is_shard(u)]
    if not shards:
        found = ", ".join(posixpath.basename(u) for u in urls[:8]) or "nothing"
        raise SourceError(
            f"{storage.redact(pattern)}: the pattern matches {found}; expected .tar or .tgz shards"
        )
    return shards


def _folder(
    url: str, storage_options: dict[str, Any] | None, retry: storage.RetryPolicy | None = None
) -> tuple[str | None, list[str]]:
    """An output folder or prefix: its ``index.json`` if present, else the shards directly in it."""
    index = storage.join(url, INDEX)
    if storage.exists(index, storage_options, retry=retry):
        return index, []
    if storage.protocol(url) in ("http", "https"):
        raise SourceError(
            f"{storage.redact(url)}: no {INDEX} there (an HTTP folder cannot be listed); "
            "give its index.json, a brace pattern of shard URLs, or a list"
        )
    names = storage.listdir(url, storage_options, retry=retry)
    shards = [storage.join(url, n) for n in names if _is_shard(n)]
    if shards:
        return None, shards
    if not names:
        if not storage.exists(url, storage_options, retry=retry):
            raise SourceError(f"{storage.redact(url)} does not exist or is empty; {EXPECTED}")
        if _is_file(url, storage_options):
            raise SourceError(_not_a_source(url))
        raise SourceError(f"{storage.redact(url)} is empty; {EXPECTED}")
    shown = ", ".join(names[:10]) + (f", … ({len(names)} entries)" if len(names) > 10 else "")
    raise SourceError(f"{storage.redact(url)} has no {INDEX} and no shards (found: {shown}); {EXPECTED}")


def _is_file(url: str, storage_options: dict[str, Any] | None) -> bool:
    fs, path = storage.get_fs(url, storage_options)
    try:
        return bool(fs.isfile(path))
    except OSError:
        return False


def _not_a_source(url: str) -> str:
    """A file that is part of an output (or anything else) but not something to read samples from."""
    where = storage.redact(url)
    folder = _dirname(where)
    if where.endswith(".idx"):
        shard = where[: -len(".idx")] + ".tar"
        return (
            f"{where} is the .idx index of a shard, not a dataset: give the shard ({shard}), "
            f"the output folder ({folder}) or its {INDEX}"
        )
    return f"{where} is a file but neither a shard (.tar, .tgz) nor an {INDEX}; give the output folder ({folder})"


def read_idx(
    url: str, storage_options: dict[str, Any] | None, retry: storage.RetryPolicy | None = None
) -> ShardIndex:
    """A ``.idx`` file, parsed; a file that is not one is a ShardError that does not quote it."""
    try:
        raw = storage.read_bytes(url, storage_options, retry=retry)
    except storage.StorageError:
        raise  # it names the URL and the cause already
    except OSError as e:
        raise ShardError(f"{url}: cannot read index: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ShardError(f"{url}: not a DALI .idx file (not text)") from None
    return parse_idx(text, url)


def _shard_info(
    url: str, storage_options: dict[str, Any] | None, counts: bool, retry: storage.RetryPolicy | None = None
) -> tuple[ShardInfo, ShardIndex | None]:
    """A shard and, when counting read it anyway, its layout (``.idx`` or header scan)."""
    compressed = is_gzip_name(url)
    idx_url = idx_url_for(url)  # None for a signed URL: no other object's URL can be derived from it
    if not compressed and idx_url is not None and storage.exists(idx_url, storage_options, retry=retry):
        if not counts:
            return ShardInfo(url, 0, idx_url), None
        index = read_idx(idx_url, storage_options, retry)
        return ShardInfo(url, len(index), idx_url, layout=index.digest()), index
    if not storage.exists(url, storage_options, retry=retry):
        raise SourceError(f"shard not found: {storage.redact(url)}")
    if not counts:
        return ShardInfo(url, 0, None, compressed=compressed), None
    compressed = compressed or _is_gzip(url, storage_options, retry)
    index = scan_tar(url, storage_options, compressed, retry=retry)
    return ShardInfo(url, len(index), None, compressed=compressed, index=index, layout=index.digest()), index


def raw_archive_problem(url: str, layout: ShardIndex) -> str | None:
    """Why a shard looks like a raw image archive rather than WebDataset shards, in one line; None if not.

    WebDataset samples carry companion members (``.json``, ``.cls``, ``.txt`` …) or at least sit at the top of
    the archive; a raw image archive (PASS's ``PASS_dataset/dummy_folder/<hash>.jpeg``, a tarred image
    folder) holds lone images under folder paths. The first :data:`PEEK_SAMPLES` samples decide.
    """
    n = min(len(layout), PEEK_SAMPLES)
    if n == 0 or not layout.named:
        return None
    keys, members = layout.keys[:n], layout.members[:n]
    if any(len(ms) != 1 or ms[0].ext.lower() not in IMAGE_EXTS for ms in members):
        return None
    if not all("/" in k for k in keys):
        return None
    where = storage.redact(url)
    example = f"{keys[0]}.{members[0][0].ext}"
    if keys[0].startswith("PASS_dataset/"):
        folder = _dirname(where)
        return (
            f"{where} is a raw PASS archive ({example}, …), not a dataset: it has no metadata and still holds "
            "the images PASS removed; convert it first, then read the output: "
            f"make-shards '{folder}/PASS.*.tar' --metadata {folder}/pass_metadata.csv --output OUT "
            f"({RAW_OPT_IN})"
        )
    return (
        f"{where} looks like a raw image archive, not WebDataset shards: lone images under folders "
        f"({example}, …) and no metadata; convert it first (make-shards {where} --metadata FILE --output OUT), "
        f"then read the output ({RAW_OPT_IN})"
    )


def _first_repeated(keys: list[str]) -> str | None:
    seen: set[str] = set()
    for k in keys:
        if k in seen:
            return k
        seen.add(k)
    return None


def _check_layouts(
    shards: list[ShardInfo],
    layouts: list[tuple[str, ShardIndex]],
    storage_options: dict[str, Any] | None,
    allow_raw_archives: bool,
    retry: storage.RetryPolicy | None = None,
) -> None:
    """Shards without a manifest: refuse raw image archives (unless allowed), warn once about repeated keys."""
    if not allow_raw_archives:
        looked = layouts
        if not looked and shards:  # not counted: look at the start of the first shard only
            first = shards[0]
            try:
                looked = [
                    (
                        first.url,
                        scan_tar(first.url, storage_options, None, max_members=PEEK_SAMPLES, retry=retry),
                    )
                ]
            except ShardError:
                looked = []  # damage is for the reader to report, with its own context
        for url, layout in looked:
            problem = raw_archive_problem(url, layout)
            if problem:
                raise RawArchiveError(problem)
    repeating = [(url, layout) for url, layout in layouts if len(set(layout.keys)) < len(layout.keys)]
    if repeating:
        url, layout = repeating[0]
        key = _first_repeated(layout.keys)
        repeated = len(layout.keys) - len(set(layout.keys))
        more = f"; {len(repeating) - 1} more shards repeat keys too" if len(repeating) > 1 else ""
        log.warning(
            "%s repeats sample keys (%d times, first %r): each copy is read as a separate sample%s",
            storage.redact(url),
            repeated,
            key,
            more,
        )


PLAN_CHECK_SAMPLES = 1_000_000
"""Above this many samples claimed by a manifest, the loader checks each claim against the shard's real size
before it plans an epoch from them (planning costs tens of bytes a sample; below this it is small whatever
the claim, and each shard's ``.idx`` count is checked against the manifest when the shard is read)."""


def check_counts_fit_data(
    shards: Sequence[ShardInfo],
    storage_options: dict[str, Any] | None = None,
    *,
    retry: storage.RetryPolicy | None = None,
    threads: int = 16,
) -> None:
    """Sample counts that a manifest claims must fit the data before anything is sized by them: a shard of
    ``size`` real bytes holds at most ``size / 1024`` samples. Counts read from the data itself (an ``.idx``,
    a header scan) need no check; manifest counts are checked (one size lookup per shard, in parallel) when
    they add up to more than :data:`PLAN_CHECK_SAMPLES`. A claim that cannot fit is a :class:`ManifestError`
    naming the shard, raised before planning allocates anything."""
    claimed = [s for s in shards if s.index is None and s.layout is None]
    if sum(s.nsamples for s in claimed) <= PLAN_CHECK_SAMPLES:
        return

    def one(shard: ShardInfo) -> None:
        size = storage.file_size(shard.url, storage_options, retry=retry)
        if shard.nsamples * MIN_SAMPLE_BYTES > size:
            raise ManifestError(
                f"{storage.redact(shard.url)}: the manifest claims {shard.nsamples:,} samples, but the shard has "
                f"{size:,} bytes (a sample takes >= {MIN_SAMPLE_BYTES} bytes); its index.json is not this data's"
            )

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(claimed)))) as pool:
        list(pool.map(one, claimed))


def _read_manifest(
    url: str, storage_options: dict[str, Any] | None, retry: storage.RetryPolicy | None = None
) -> dict[str, Any] | None:
    import json

    try:
        data = json.loads(storage.read_bytes(url, storage_options, retry=retry))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("__kind__") == KIND else None


def resolve(
    source: str | Sequence[str],
    storage_options: dict[str, Any] | None = None,
    *,
    counts: bool = True,
    threads: int = 16,
    allow_external_urls: bool = False,
    allow_raw_archives: bool = False,
    retry: storage.RetryPolicy | None = None,
) -> Dataset:
    """Resolve a source into shards with sample counts (``counts=False``: URLs only, no per-shard reads).

    A single folder or ``index.json`` keeps its manifest (``Dataset.manifest``); shards are looked up in
    parallel threads (object-store latency). A manifest is validated, and may only name shards inside its own
    folder unless ``allow_external_urls`` (see docs/security.md). Shards without a manifest that look like raw
    image archives (PASS's own tars) are refused with :class:`RawArchiveError` unless ``allow_raw_archives``;
    a shard that repeats a key is warned about once.
    """
    items = [source] if isinstance(source, str) else [str(s) for s in source]
    if not items:
        raise SourceError(f"empty source list; {EXPECTED}")
    index_url: str | None = None
    shard_urls: list[str] = []
    shards: list[ShardInfo] = []
    expanded = expand_urls(items)
    single = len(expanded) == 1
    for item in expanded:
        http = storage.protocol(item) in ("http", "https")
        path = urllib.parse.urlsplit(item).path if http else item.split("://", 1)[-1]  # signed URLs: no query
        if path.endswith(".json"):
            if not storage.exists(item, storage_options, retry=retry):
                raise SourceError(f"{storage.redact(item)} not found; {EXPECTED}")
            shards.extend(
                read_index_json(item, storage_options, allow_external_urls=allow_external_urls, retry=retry)
            )
            index_url = item if single else None
        elif _GLOB.search(path) and not http:  # HTTP cannot list, so cannot glob
            shard_urls.extend(_glob(item, storage_options))
        elif _is_shard(path):
            shard_urls.append(item)
        else:
            found_index, found = _folder(item.rstrip("/") or item, storage_options, retry)
            if found_index is not None:
                shards.extend(
                    read_index_json(
                        found_index, storage_options, allow_external_urls=allow_external_urls, retry=retry
                    )
                )
                index_url = found_index if single else None
            shard_urls.extend(found)
    if shard_urls:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(shard_urls)))) as pool:
            looked_up = list(pool.map(lambda u: _shard_info(u, storage_options, counts, retry), shard_urls))
        listed = [info for info, _ in looked_up]
        layouts = [(info.url, layout) for info, layout in looked_up if layout is not None]
        _check_layouts(listed, layouts, storage_options, allow_raw_archives, retry)
        shards.extend(listed)
    if not shards:
        raise SourceError(f"no shards in {storage.redact(str(source))}; {EXPECTED}")
    if counts and sum(s.nsamples for s in shards) == 0:
        raise SourceError(f"the shards of {storage.redact(str(source))} contain no samples")
    manifest = _read_manifest(index_url, storage_options, retry) if index_url and not shard_urls else None
    return Dataset(
        source if isinstance(source, str) else items, shards, index_url if manifest else None, manifest
    )
