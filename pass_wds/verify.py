"""``pass-wds verify`` and ``inspect``: check an output (local or remote) against its manifest, summarise it,
and find one sample. Reads the format through :mod:`pass_wds.format` only (no torch: commands start fast)."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pass_wds import storage
from pass_wds.format import tar
from pass_wds.format.idx import ShardIndex, group_samples, parse_idx
from pass_wds.format.manifest import ERRORS, load_index, output_dir, resolve_entry, size_spread


@dataclass
class ShardCheck:
    url: str
    ok: bool
    problems: list[str]


def _entry_url(base: str, entry: dict[str, Any], field: str) -> str:
    """A shard or .idx of a manifest that :func:`load_index` has validated (and kept inside ``base``)."""
    return resolve_entry(base, entry[field], field, base, allow_external=True)


def check_shard(
    base: str, entry: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> ShardCheck:
    """Re-check one shard against its manifest entry: size, sha256, tar structure, sample count, and that the
    ``.idx`` names exactly the members the tar's own headers describe (keys, extensions, offsets, sizes)."""
    url = _entry_url(base, entry, "url")
    problems: list[str] = []
    members: list[tuple[str, int, int]] = []
    try:
        with storage.open_stream(url, 0, None, storage_options) as f:  # sequential, retried, resumable
            h = hashlib.sha256()
            hashing = _HashingReader(f, h)
            try:
                for info in tar.scan_tar(hashing):  # type: ignore[arg-type]
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
    if size != entry.get("filesize"):
        problems.append(f"size {size} != manifest {entry.get('filesize')}")
    if "sha256" in entry and h.hexdigest() != entry["sha256"]:
        problems.append("sha256 mismatch")
    if len(layout) != entry.get("nsamples"):
        problems.append(f"{len(layout)} samples != manifest {entry.get('nsamples')}")
    if len(set(layout.keys)) != len(layout):
        problems.append("members of a sample are not adjacent (or duplicate keys)")
    if entry.get("idx"):
        try:
            idx = parse_idx(storage.read_text(_entry_url(base, entry, "idx"), storage_options), entry["idx"])
            if len(idx) != entry.get("nsamples"):
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
    return ShardCheck(url, not problems, problems)


def _first_difference(idx: ShardIndex, layout: ShardIndex) -> int | None:
    for i, (key, members) in enumerate(zip(idx.keys, idx.members, strict=False)):
        if i >= len(layout):  # the tar holds fewer samples than the .idx (a damaged or replaced shard)
            return i
        if members != layout.members[i] or (idx.named and key != layout.keys[i]):
            return i
    return None


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
    out: str,
    storage_options: dict[str, Any] | None = None,
    *,
    workers: int = 4,
    on_shard: Callable[[ShardCheck], None] | None = None,
    allow_external_urls: bool = False,
) -> list[ShardCheck]:
    """Check every shard listed in ``index.json``; return the checks (bad ones have ``ok=False``)."""
    index = load_index(out, storage_options, allow_external_urls=allow_external_urls)
    base = output_dir(out)
    checks: list[ShardCheck] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for check in pool.map(lambda e: check_shard(base, e, storage_options), index["shardlist"]):
            checks.append(check)
            if on_shard:
                on_shard(check)
    return checks


# ------------------------------------------------------------------------------------------------- inspect


def summarize(
    out: str, storage_options: dict[str, Any] | None = None, *, allow_external_urls: bool = False
) -> str:
    """A human summary: shards, samples, bytes, balance, rejected inputs by reason."""
    index = load_index(out, storage_options, allow_external_urls=allow_external_urls)
    base = output_dir(out)
    sizes = [s["filesize"] for s in index["shardlist"]]
    counts = [s["nsamples"] for s in index["shardlist"]]
    lines = [
        f"dataset      {index.get('name')}  ({storage.redact(base)})",
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
    lines.append(f"seed         {index.get('seed')}")
    try:
        errors = storage.read_text(storage.join(base, ERRORS), storage_options).splitlines()
        reasons = Counter(json.loads(e)["reason"] for e in errors if e.strip())
        lines.append(
            f"rejected     {sum(reasons.values())}"
            + "".join(f"\n  {r:<22} {n}" for r, n in sorted(reasons.items()))
        )
    except FileNotFoundError:
        lines.append("rejected     (no errors.jsonl)")
    return "\n".join(lines)


def find_sample(
    out: str, key: str, storage_options: dict[str, Any] | None = None, *, allow_external_urls: bool = False
) -> dict[str, Any] | None:
    """Locate a sample by key through the ``.idx`` files and return its JSON metadata."""

    index = load_index(out, storage_options, allow_external_urls=allow_external_urls)
    base = output_dir(out)
    for entry in index["shardlist"]:
        if not entry.get("idx"):
            continue
        shard_index = parse_idx(
            storage.read_text(_entry_url(base, entry, "idx"), storage_options), entry["idx"]
        )
        for sample_key, members in zip(shard_index.keys, shard_index.members, strict=True):
            for ext, offset, nbytes in members:
                if ext == "json" and sample_key == key:
                    with storage.open_read(_entry_url(base, entry, "url"), storage_options) as f:
                        f.seek(offset)
                        meta: dict[str, Any] = json.loads(f.read(nbytes))
                    meta.setdefault("__shard__", entry["url"])
                    return meta
    return None
