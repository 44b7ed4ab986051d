"""The manifest (``index.json``) and the side files of an output: names, schema, write and read.

``index.json`` is readable as-is by ``wids`` (``wids-shard-index-v1``; shard URLs relative to the index's
folder, so a copied or re-hosted output still works) and carries what wids ignores: per-shard sha256 and
``.idx`` name, dataset totals, the seed, the effective configuration and the plan digest used for resume.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pass_wds import storage
from pass_wds.format.errors import ShardError
from pass_wds.format.idx import ShardIndex, idx_url_for, is_gzip_name
from pass_wds.format.keys import is_unsafe
from pass_wds.format.revisions import superseded_names, validate_lineage

INDEX = "index.json"
STATS = "stats.json"
ERRORS = "errors.jsonl"
ATTRIBUTION = "attribution.csv"
UNMATCHED = "metadata_without_image.txt"
CROISSANT = "croissant.json"  # written by pass_wds.format.croissant
SIDE_FILES = (STATS, ERRORS, ATTRIBUTION, UNMATCHED, CROISSANT)
"""The files of an output beside its shards and ``index.json``, in the order ``upload`` sends them."""
OUTPUT_FILES = frozenset({INDEX, *SIDE_FILES})
"""Every name an output holds besides its shards and ``.idx`` files."""
KIND = "wids-shard-index-v1"


def shard_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.tar"


def idx_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.idx"


class ShardRecord(Protocol):
    """What the manifest records of a written shard (``writing.ShardResult`` is one)."""

    index: int
    nsamples: int
    filesize: int
    sha256: str


def build_index(
    name: str,
    results: Iterable[ShardRecord],
    *,
    seed: int,
    config: dict[str, Any],
    plan_digest: str,
    version: str,
    dataset_version: str | None = None,
) -> dict[str, Any]:
    """The manifest of a first conversion (revision 0; ``make-shards update`` writes the later ones)."""
    shardlist = [
        {
            "url": shard_name(name, r.index),
            "nsamples": r.nsamples,
            "filesize": r.filesize,
            "sha256": r.sha256,
            "idx": idx_name(name, r.index),
        }
        for r in sorted(results, key=lambda r: r.index)
    ]
    return {
        "__kind__": KIND,
        "wids_version": 1,
        "name": name,
        "shardlist": shardlist,
        "totals": {
            "shards": len(shardlist),
            "samples": sum(s["nsamples"] for s in shardlist),
            "bytes": sum(s["filesize"] for s in shardlist),
        },
        "seed": seed,
        "plan_digest": plan_digest,
        "config": config,
        "created_by": f"pass-wds {version}",
        "revision": 0,
        "dataset_version": dataset_version,
        "history": [],
    }


def is_pass_wds_index(index: object) -> bool:
    """An ``index.json`` that pass-wds wrote (kind, plan digest and shard list), as opposed to any other
    manifest (a foreign wids index names files pass-wds must never replace)."""
    return (
        isinstance(index, dict)
        and index.get("__kind__") == KIND
        and isinstance(index.get("plan_digest"), str)
        and isinstance(index.get("shardlist"), list)
    )


def listed_names(index: object) -> set[str]:
    """Names directly in an output's folder that its own pass-wds ``index.json`` claims: the shards and
    ``.idx`` files it lists, those its ``history`` says earlier revisions replaced (still there after
    ``make-shards update --keep-superseded``), and the output files (:data:`OUTPUT_FILES`). Empty for any
    other manifest.

    This is the ownership rule of make-shards and ``upload``: only what an output itself lists is ever
    replaced or removed, never a name that merely looks like ours (``pass-backup.tar``, someone's ``*.tmp-*``).
    """
    if not is_pass_wds_index(index):
        return set()
    assert isinstance(index, dict)
    owned = set(OUTPUT_FILES)
    for entry in index["shardlist"]:
        if isinstance(entry, dict):
            owned |= {v for k in ("url", "idx") if isinstance(v := entry.get(k), str) and "/" not in v}
    return owned | superseded_names(index)


def size_spread(sizes: Iterable[int]) -> dict[str, Any]:
    """Shard balance as ``stats.json`` and ``inspect`` report it: min, max, mean and the largest deviation from
    the mean in percent (the one definition of "spread")."""
    values = list(sizes)
    if not values:
        return {"min": 0, "max": 0, "mean": 0.0, "max_dev_pct": 0.0}
    mean = sum(values) / len(values)
    dev = max(abs(v - mean) for v in values) / mean * 100 if mean else 0.0
    return {"min": min(values), "max": max(values), "mean": mean, "max_dev_pct": dev}


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def attribution_csv(columns: list[str], rows: Iterable[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", *columns])
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


class ManifestError(ShardError):
    """An ``index.json`` that is malformed or points outside its dataset; the message names the field."""


class ManifestNotFoundError(ManifestError, FileNotFoundError):
    """There is no ``index.json`` where one was asked for (also a ``FileNotFoundError``)."""


MAX_SHARD_SAMPLES = 10_000_000
"""More samples than any tar shard holds; a larger count is a lie that would cost gigabytes of planning arrays."""
MIN_SAMPLE_BYTES = 1024
"""A sample takes at least two 512-byte tar blocks (two members' headers, or one header and its data), so a
shard of ``size`` bytes holds at most size/1024 samples: what a count may claim is bounded by the data."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_ALLOW_HINT = "pass allow_external_urls=True (--allow-external-urls) only if this manifest is trusted"


def parse_index(raw: bytes, url: str, *, require_filesize: bool = False) -> dict[str, Any]:
    """Decode and validate an ``index.json`` (its content is never quoted back: it may not be a manifest)."""
    where = storage.redact(url)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ManifestError(f"{where}: not JSON (expected a {KIND} index.json)") from None
    validate_index(data, where, require_filesize=require_filesize)
    return data  # type: ignore[no-any-return]


def validate_index(data: Any, where: str, *, require_filesize: bool = False) -> None:
    """Kind, required fields, types and counts that fit the sizes — every reader calls this before using a
    manifest, so a bad one is a :class:`ManifestError` naming the field, never a KeyError or a huge allocation."""

    def bad(field: str, problem: str) -> ManifestError:
        return ManifestError(f"{where}: {field} {problem}")

    if not isinstance(data, dict):
        raise ManifestError(f"{where}: not a JSON object (expected a {KIND} index.json)")
    if data.get("__kind__") != KIND:
        raise bad("__kind__", f"must be {KIND!r} (not a pass-wds/wids shard index)")
    shardlist = data.get("shardlist")
    if not isinstance(shardlist, list):
        raise bad("shardlist", "must be a list of shard entries")
    for i, entry in enumerate(shardlist):
        f = f"shardlist[{i}]"
        if not isinstance(entry, dict):
            raise bad(f, "must be an object with url and nsamples")
        if not isinstance(entry.get("url"), str) or not entry["url"]:
            raise bad(f"{f}.url", "must be a non-empty string")
        n = entry.get("nsamples")
        if type(n) is not int or n < 0:
            raise bad(f"{f}.nsamples", "must be a whole number >= 0")
        if n > MAX_SHARD_SAMPLES:
            raise bad(
                f"{f}.nsamples", f"is {n:,}: more than a tar shard holds (at most {MAX_SHARD_SAMPLES:,})"
            )
        size = entry.get("filesize")
        if size is None and require_filesize:
            raise bad(f"{f}.filesize", "is required")
        if size is not None:
            if type(size) is not int or size < 0:
                raise bad(f"{f}.filesize", "must be a whole number >= 0")
            if n * MIN_SAMPLE_BYTES > size:
                raise bad(
                    f"{f}.nsamples",
                    f"({n:,}) cannot fit in filesize {size:,} (a sample takes >= {MIN_SAMPLE_BYTES} bytes)",
                )
        sha = entry.get("sha256")
        if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            raise bad(f"{f}.sha256", "must be 64 lowercase hex digits")
        idx = entry.get("idx")
        if idx is not None and not (isinstance(idx, str) and idx):
            raise bad(f"{f}.idx", "must be a non-empty string")
    if "totals" in data and not isinstance(data["totals"], dict):
        raise bad("totals", "must be an object")
    validate_lineage(data, where, ManifestError)


def is_external(ref: str) -> bool:
    """An absolute path, a URL with a scheme (``file:``, ``s3:``, ``http:`` …) or a network path."""
    return ref.startswith(("/", "\\")) or bool(_SCHEME.match(ref))


def check_entry_url(ref: str, field: str, where: str, *, allow_external: bool = False) -> None:
    """A shard or ``.idx`` named in a manifest must stay inside the manifest's folder: relative, without a
    ``..`` component (also percent-encoded), unless the caller trusts the manifest (``allow_external``)."""
    if is_external(ref):
        if not allow_external:
            raise ManifestError(
                f"{where}: {field} is an absolute path or URL outside the dataset folder; {_ALLOW_HINT}"
            )
        return
    if is_unsafe(ref) or is_unsafe(urllib.parse.unquote(ref)):
        raise ManifestError(f"{where}: {field} leaves the dataset folder ('..'); {_ALLOW_HINT}")


def resolve_entry(base: str, ref: str, field: str, where: str, *, allow_external: bool = False) -> str:
    """The URL of a shard or ``.idx`` listed as ``ref`` in a manifest whose folder is ``base`` (checked)."""
    check_entry_url(ref, field, where, allow_external=allow_external)
    if is_external(ref):
        return ref
    if storage.is_local(base) and not base.startswith("file://"):
        return posixpath.normpath(posixpath.join(base, ref)) if base else ref
    return posixpath.join(base.rstrip("/"), ref)


def is_index_url(url: str) -> bool:
    return storage.without_query(url).endswith(".json")


def load_index(
    out: str,
    storage_options: dict[str, Any] | None = None,
    *,
    allow_external_urls: bool = False,
    retry: storage.RetryPolicy | None = None,
) -> dict[str, Any]:
    """The validated manifest of a pass-wds output (folder/URL or its index.json): every entry has url,
    nsamples and filesize, and every shard and ``.idx`` it names lies inside the output's folder unless
    ``allow_external_urls``."""
    url = out if is_index_url(out) else storage.join(out, INDEX)
    try:
        raw = storage.read_bytes(url, storage_options, retry=retry)
    except FileNotFoundError:
        raise ManifestNotFoundError(
            f"no {INDEX} at {storage.redact(url)} (not a pass-wds output, or unfinished)"
        ) from None
    data = parse_index(raw, url, require_filesize=True)
    where = storage.redact(url)
    for i, entry in enumerate(data["shardlist"]):
        check_entry_url(entry["url"], f"shardlist[{i}].url", where, allow_external=allow_external_urls)
        if entry.get("idx"):
            check_entry_url(entry["idx"], f"shardlist[{i}].idx", where, allow_external=allow_external_urls)
    return data


def output_dir(out: str) -> str:
    return _dirname(storage.without_query(out)) if is_index_url(out) else out


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
    layout: str | None = None
    """Digest of the sample layout (keys, member sizes) from the ``.idx`` or a header scan, where the shard was
    read without a manifest: with ``sha256`` and ``filesize`` it is what identifies the shard's content."""


def _dirname(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else ""


def read_index_json(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    allow_external_urls: bool = False,
    retry: storage.RetryPolicy | None = None,
) -> list[ShardInfo]:
    """Shards of a wids ``index.json`` (validated; URLs relative to its folder and kept inside it unless
    ``allow_external_urls``); ``nsamples`` is required."""
    where = storage.redact(url)
    try:
        raw = storage.read_bytes(url, storage_options, retry=retry)
    except storage.StorageError:
        raise  # it names the URL and the cause already
    except OSError as e:
        raise ShardError(
            f"{where}: cannot read shard index: {storage.redact(str(e), storage_options)}"
        ) from None
    data = parse_index(raw, url)
    base = _dirname(storage.without_query(url))
    shards = []
    for i, entry in enumerate(data["shardlist"]):
        ext = allow_external_urls
        shard_url = resolve_entry(base, entry["url"], f"shardlist[{i}].url", where, allow_external=ext)
        idx = entry.get("idx")
        idx_url = (
            resolve_entry(base, idx, f"shardlist[{i}].idx", where, allow_external=ext)
            if idx
            else idx_url_for(shard_url)
        )
        shards.append(
            ShardInfo(
                shard_url,
                entry["nsamples"],
                idx_url,
                compressed=is_gzip_name(shard_url),
                filesize=entry.get("filesize"),
                sha256=entry.get("sha256"),
            )
        )
    return shards
