"""``pass-wds verify`` and ``inspect``: check an output (local or remote) against its manifest, summarise it,
and find one sample. Reads the format through :mod:`pass_wds.format` only (no torch: commands start fast)."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pass_wds import storage
from pass_wds.dataset import Dataset, resolve, scan_tar
from pass_wds.format import tar
from pass_wds.format.idx import ShardIndex, group_samples, parse_idx
from pass_wds.format.keys import key_of, safe_key
from pass_wds.format.manifest import ERRORS, ShardInfo, size_spread
from pass_wds.format.samples import parse_sample_json


@dataclass
class ShardCheck:
    url: str
    ok: bool
    problems: list[str]
    manifest: bool = True  # checked against index.json (size, sha256, count), not only its own structure


def check_shard(
    base: str,
    entry: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
    retry: storage.RetryPolicy | None = None,
) -> ShardCheck:
    """Re-check one shard against its manifest entry: size, sha256, tar structure, sample count, and that the
    ``.idx`` names exactly the members the tar's own headers describe (keys, extensions, offsets, sizes)."""
    url = storage.join(base, entry["url"])
    problems: list[str] = []
    members: list[tuple[str, int, int]] = []
    try:
        with storage.open_stream(url, 0, None, storage_options, retry=retry) as f:  # retried, resumable
            h = hashlib.sha256()
            hashing = _HashingReader(f, h)
            try:
                for info in tar.scan_tar(hashing):
                    if not info.isreg:
                        problems.append(f"non-regular member {info.name!r}")
                        continue
                    members.append((info.name, info.offset_data, info.size))
            except tar.TarDamaged as e:
                problems.append(f"tar structure broken: {e}")
            while hashing.read(1 << 20):
                pass
            size = hashing.count
    except FileNotFoundError:
        return ShardCheck(url, False, ["missing"])
    layout = group_samples(members)
    if entry.get("filesize") is not None and size != entry["filesize"]:
        problems.append(f"size {size} != manifest {entry.get('filesize')}")
    if entry.get("sha256") and h.hexdigest() != entry["sha256"]:
        problems.append("sha256 mismatch")
    if entry.get("nsamples") is not None and len(layout) != entry["nsamples"]:
        problems.append(f"{len(layout)} samples != manifest {entry.get('nsamples')}")
    if len(set(layout.keys)) != len(layout):
        problems.append("members of a sample are not adjacent (or duplicate keys)")
    if entry.get("idx"):
        try:
            idx = parse_idx(
                storage.read_text(storage.join(base, entry["idx"]), storage_options, retry=retry),
                entry["idx"],
            )
            if entry.get("nsamples") is not None and len(idx) != entry["nsamples"]:
                problems.append(f".idx lists {len(idx)} samples")
            else:
                bad = _first_difference(idx, layout)
                if bad is not None:
                    problems.append(
                        f".idx sample {bad} does not match the tar's headers ({_describe(idx, bad)})"
                    )
        except FileNotFoundError:
            problems.append(f"index file {entry['idx']} missing")
        except ValueError as e:
            problems.append(f"index file {entry['idx']}: {e}")
    return ShardCheck(url, not problems, problems, manifest=bool(entry.get("sha256")))


def _first_difference(idx: ShardIndex, layout: ShardIndex) -> int | None:
    """The first sample where the ``.idx`` and the tar's headers disagree (one may be shorter)."""
    for i, (key, members) in enumerate(zip(idx.keys, idx.members, strict=False)):
        if i >= len(layout) or members != layout.members[i] or (idx.named and key != layout.keys[i]):
            return i
    return None if len(idx) == len(layout) else min(len(idx), len(layout))


def _describe(idx: ShardIndex, i: int) -> str:
    return f"key {idx.keys[i]!r}" if idx.named else f"members {idx.members[i]}"


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes and counts everything read through it (one pass for tar + sha256)."""

    def __init__(self, f: Any, h: Any) -> None:
        self._f, self._h, self.count = f, h, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        self._h.update(b)
        self.count += len(b)
        return b  # type: ignore[no-any-return]

    def readinto(self, buf: Any) -> int:
        b = self.read(len(buf))
        buf[: len(b)] = b
        return len(b)


def verify(
    out: str | list[str],
    storage_options: dict[str, Any] | None = None,
    *,
    workers: int = 4,
    on_shard: Callable[[ShardCheck], None] | None = None,
    allow_external_urls: bool = False,
    allow_raw_archives: bool = False,
    retry: storage.RetryPolicy | None = None,
) -> list[ShardCheck]:
    """Check every shard of a source against ``index.json`` (or, for shards without one, their tar structure
    and ``.idx``); return the checks (bad ones have ``ok=False``)."""
    ds = resolve(
        out,
        storage_options,
        counts=False,
        allow_external_urls=allow_external_urls,
        allow_raw_archives=allow_raw_archives,
        retry=retry,
    )
    checks: list[ShardCheck] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for check in pool.map(lambda e: check_shard("", e, storage_options, retry), _entries(ds)):
            checks.append(check)
            if on_shard:
                on_shard(check)
    return checks


def _entries(ds: Dataset) -> list[dict[str, Any]]:
    """Manifest-style entries with absolute URLs; without a manifest only what the shard files say."""
    listed = ds.manifest is not None
    return [
        {
            "url": s.url,
            "nsamples": s.nsamples if listed else None,
            "filesize": s.filesize,
            "sha256": s.sha256,
            "idx": s.idx_url if (listed or s.idx_url) else None,
        }
        for s in ds.shards
    ]


# ------------------------------------------------------------------------------------------------- inspect


def summarize(
    out: str | list[str],
    storage_options: dict[str, Any] | None = None,
    *,
    allow_external_urls: bool = False,
    allow_raw_archives: bool = False,
    retry: storage.RetryPolicy | None = None,
) -> str:
    """A human summary: shards, samples, bytes, balance, rejected inputs by reason."""
    ds = resolve(
        out,
        storage_options,
        allow_external_urls=allow_external_urls,
        allow_raw_archives=allow_raw_archives,
        retry=retry,
    )
    index = ds.manifest or {}
    sizes = [
        s.filesize if s.filesize is not None else storage.file_size(s.url, storage_options, retry=retry)
        for s in ds.shards
    ]
    counts = [s.nsamples for s in ds.shards]
    where = ds.folder or (out if isinstance(out, str) else f"{len(out)} sources")
    lines = [
        f"dataset      {ds.name}  ({storage.redact(where)})",
        f"shards       {len(sizes)}",
        f"samples      {sum(counts):,}",
        f"bytes        {sum(sizes):,} ({sum(sizes) / 1e6:.1f} MB)",
    ]
    if sizes:
        sp = size_spread(sizes)
        lines.append(
            f"shard size   min {sp['min']:,}  max {sp['max']:,}  mean {sp['mean']:,.0f}  "
            f"(max dev {sp['max_dev_pct']:.1f}%)"
        )
        lines.append(f"per shard    {min(counts)}–{max(counts)} samples")
    lines.append(f"seed         {index.get('seed', '(no index.json)')}")
    if index:
        lines += _lineage_lines(index)
    try:
        if ds.folder is None:
            raise FileNotFoundError
        errors = storage.read_text(storage.join(ds.folder, ERRORS), storage_options, retry=retry).splitlines()
        reasons = Counter(json.loads(e)["reason"] for e in errors if e.strip())
        lines.append(
            f"rejected     {sum(reasons.values())}"
            + "".join(f"\n  {r:<22} {n}" for r, n in sorted(reasons.items()))
        )
    except FileNotFoundError:
        lines.append("rejected     (no errors.jsonl)")
    return "\n".join(lines)


def _lineage_lines(index: dict[str, Any]) -> list[str]:
    """``revision`` and one line per ``history`` entry (make-shards update); the manifest was validated."""
    version = index.get("dataset_version")
    lines = [
        f"revision     {index.get('revision', 0)}" + (f" (dataset version {version})" if version else "")
    ]
    for h in index.get("history", []):
        what = f"removed {h['removed']['count']:,} samples"
        if h.get("refreshed"):
            what += f", refreshed {h['refreshed']:,}"
        replaced = h.get("replaced", [])
        dropped = sum(1 for r in replaced if r.get("new") is None)
        lines.append(
            f"  r{h['revision']} {h['date']}: {what}; {len(replaced)} shards replaced"
            + (f" ({dropped} emptied)" if dropped else "")
            + (f"; version {h['dataset_version']}" if h.get("dataset_version") else "")
            + f"; keys sha256 {h['removed'].get('sha256', '?')[:16]}…"
        )
    return lines


@dataclass
class SampleLookup:
    """What ``inspect --sample QUERY`` found: the sample's JSON, or the input's ``errors.jsonl`` record when
    make-shards rejected it, or the keys a prefix matches when it names more than one sample."""

    query: str
    meta: dict[str, Any] | None = None
    rejected: dict[str, Any] | None = None
    candidates: list[str] = field(default_factory=list)

    def message(self) -> str:
        """One line for a query that found no single sample."""
        if self.rejected is not None:
            r = self.rejected
            what = f"{r.get('source', '?')}: {r.get('member') or r.get('key')}"
            detail = f" ({r['detail']})" if r.get("detail") else ""
            return f"{what} is not in the dataset: rejected: {r.get('reason')}{detail} (errors.jsonl)"
        if len(self.candidates) > 1:
            shown = ", ".join(self.candidates[:5]) + (", …" if len(self.candidates) > 5 else "")
            more = (
                f"{len(self.candidates)}"
                if len(self.candidates) < PREFIX_LIMIT
                else f"{PREFIX_LIMIT} or more"
            )
            return f"{more} samples start with {self.query!r} ({shown}); give more of the key"
        return f"no sample with key, key prefix or file name {self.query!r}"


PREFIX_LIMIT = 20
"""Matches collected for a key prefix before it is called ambiguous."""


def lookup_sample(
    out: str | list[str],
    query: str,
    storage_options: dict[str, Any] | None = None,
    *,
    allow_external_urls: bool = False,
    allow_raw_archives: bool = False,
    retry: storage.RetryPolicy | None = None,
) -> SampleLookup:
    """Find a sample by its key, its original file name (``abc.jpeg``, or the member path) or a unique key
    prefix (``0a1b2c``); keys are cleaned file-name stems, so a name maps to its key without reading any
    sample. An input that make-shards rejected is found in ``errors.jsonl`` with its reason."""
    wanted = {query, safe_key(key_of(query))}
    ds = resolve(
        out,
        storage_options,
        allow_external_urls=allow_external_urls,
        allow_raw_archives=allow_raw_archives,
        retry=retry,
    )
    layouts = [(shard, load_layout(shard, storage_options, retry)) for shard in ds.shards]
    for shard, layout in layouts:
        for sample_key, members in zip(layout.keys, layout.members, strict=True):
            if sample_key in wanted:
                return SampleLookup(query, meta=_sample_json(shard, members, storage_options, retry))
    rejections = _rejections(ds, storage_options, retry)
    for record in rejections:
        member = str(record.get("member") or "")
        if record.get("key") in wanted or query in (member, member.rsplit("/", 1)[-1]):
            return SampleLookup(query, rejected=record)
    if not query or "/" in query:
        return SampleLookup(query)
    found: list[tuple[str, ShardInfo, Any]] = []
    for shard, layout in layouts:
        for sample_key, members in zip(layout.keys, layout.members, strict=True):
            if sample_key.startswith(query) and len(found) < PREFIX_LIMIT:
                found.append((sample_key, shard, members))
    rejected = [r for r in rejections if str(r.get("key") or "").startswith(query)]
    keys = [k for k, _, _ in found] + [str(r["key"]) for r in rejected]
    if len(keys) == 1 and found:
        return SampleLookup(query, meta=_sample_json(found[0][1], found[0][2], storage_options, retry))
    if len(keys) == 1:
        return SampleLookup(query, rejected=rejected[0])
    return SampleLookup(query, candidates=keys[:PREFIX_LIMIT])


def find_sample(
    out: str | list[str],
    key: str,
    storage_options: dict[str, Any] | None = None,
    *,
    allow_external_urls: bool = False,
    allow_raw_archives: bool = False,
    retry: storage.RetryPolicy | None = None,
) -> dict[str, Any] | None:
    """The JSON of the sample :func:`lookup_sample` finds, or None."""
    return lookup_sample(
        out,
        key,
        storage_options,
        allow_external_urls=allow_external_urls,
        allow_raw_archives=allow_raw_archives,
        retry=retry,
    ).meta


def _sample_json(
    shard: ShardInfo,
    members: Any,
    storage_options: dict[str, Any] | None,
    retry: storage.RetryPolicy | None = None,
) -> dict[str, Any]:
    for ext, offset, nbytes in members:
        if ext == "json":
            with storage.open_stream(shard.url, offset, offset + nbytes, storage_options, retry=retry) as f:
                meta = parse_sample_json(f.read(nbytes))
            meta.setdefault("__shard__", storage.redact(shard.url))
            return meta
    return {"__shard__": storage.redact(shard.url)}  # a foreign shard without JSON: the sample exists


def _rejections(
    ds: Dataset, storage_options: dict[str, Any] | None, retry: storage.RetryPolicy | None = None
) -> list[dict[str, Any]]:
    """The ``errors.jsonl`` records of an output (none without a manifest or the file)."""
    if ds.folder is None:
        return []
    try:
        text = storage.read_text(storage.join(ds.folder, ERRORS), storage_options, retry=retry)
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def json_members(
    url: str,
    layout: ShardIndex,
    positions: list[int],
    storage_options: dict[str, Any] | None = None,
    retry: storage.RetryPolicy | None = None,
) -> dict[int, bytes]:
    """The JSON members of the samples at ``positions`` of one shard (one positional read each)."""
    reader = storage.RangeReader(url, storage_options, retry=retry)
    try:
        out = {}
        for i in positions:
            m = next((m for m in layout.members[i] if m.ext == "json"), None)
            if m is not None:
                out[i] = reader.read(m.offset, m.size)
        return out
    finally:
        reader.close()


def load_layout(
    shard: ShardInfo, storage_options: dict[str, Any] | None = None, retry: storage.RetryPolicy | None = None
) -> ShardIndex:
    """A shard's sample layout: kept from a scan, else its ``.idx``, else one header scan."""
    if shard.index is not None:
        return shard.index
    if shard.idx_url and storage.exists(shard.idx_url, storage_options, retry=retry):
        return parse_idx(storage.read_text(shard.idx_url, storage_options, retry=retry), shard.idx_url)
    return scan_tar(shard.url, storage_options, shard.compressed, retry=retry)
