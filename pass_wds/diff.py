"""``pass-wds diff OLD NEW``: which keys two outputs (or two revisions' manifests) add, remove and change.

Keys come from the ``.idx`` files (nothing else is read for a sample in a shard both sides share, by sha256);
a key in shards that differ is *changed* when its JSON member differs (the JSON carries the image's size and
crc32, so a changed image shows too). When OLD is a manifest whose replaced shards are gone (the default of
``make-shards update``), its keys cannot be read: if NEW's history descends from OLD (the sha256 chain of
``previous_index_sha256``), the diff says what the history knows: the count and digest of the removed keys,
and the keys themselves where the revisions recorded them (``--record-keys``). Torch-free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pass_wds import storage
from pass_wds.format import manifest
from pass_wds.format.idx import ShardIndex, parse_idx
from pass_wds.format.revisions import revision_of
from pass_wds.verify import json_members


class DiffError(manifest.ManifestError):
    """Two outputs that cannot be compared (a side that is not an output, unreadable keys); one line."""


@dataclass
class Side:
    url: str
    base: str
    index: dict[str, Any]
    sha256: str
    layouts: list[ShardIndex | None]  # None: the .idx cannot be read (a replaced shard, deleted)

    @property
    def samples(self) -> int:
        return int(sum(e["nsamples"] for e in self.index["shardlist"]))

    def describe(self) -> str:
        version = self.index.get("dataset_version")
        return (
            f"{storage.redact(self.url)}: revision {revision_of(self.index)}"
            + (f" ({version})" if version else "")
            + f", {self.samples:,} samples in {len(self.index['shardlist'])} shards"
        )


def load_side(url: str, so: dict[str, Any], threads: int = 16) -> Side:
    index_url = url if manifest.is_index_url(url) else storage.join(url, manifest.INDEX)
    try:
        raw = storage.read_bytes(index_url, so)
    except FileNotFoundError:
        raise DiffError(f"{storage.redact(index_url)} not found (not a pass-wds output)") from None
    index = manifest.parse_index(raw, index_url, require_filesize=True)
    base = manifest.output_dir(url)
    for i, e in enumerate(index["shardlist"]):
        manifest.check_entry_url(e["url"], f"shardlist[{i}].url", storage.redact(index_url))
        if e.get("idx"):
            manifest.check_entry_url(e["idx"], f"shardlist[{i}].idx", storage.redact(index_url))

    def layout(e: dict[str, Any]) -> ShardIndex | None:
        if not e.get("idx"):
            return None
        idx_url = manifest.resolve_entry(base, e["idx"], "idx", storage.redact(index_url))
        try:
            parsed = parse_idx(storage.read_text(idx_url, so), idx_url)
        except FileNotFoundError:
            return None
        return parsed if parsed.named and len(parsed) == e["nsamples"] else None

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pass-wds-diff") as pool:
        layouts = list(pool.map(layout, index["shardlist"]))
    return Side(url, base, index, hashlib.sha256(raw).hexdigest(), layouts)


@dataclass
class Diff:
    old: Side
    new: Side
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be listed, and why

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed or self.notes)

    def lines(self, keys: bool = True) -> Iterator[str]:
        yield f"old  {self.old.describe()}"
        yield f"new  {self.new.describe()}"
        yield f"added {len(self.added):,}, removed {len(self.removed):,}, changed {len(self.changed):,}"
        yield from self.notes
        if keys:
            for mark, group in (("+", self.added), ("-", self.removed), ("~", self.changed)):
                for key in group:
                    yield f"{mark} {key}"


def _where(side: Side) -> dict[str, tuple[int, int]]:
    out = {}
    for s, layout in enumerate(side.layouts):
        if layout is not None:
            for i, key in enumerate(layout.keys):
                out[key] = (s, i)
    return out


def diff(old_url: str, new_url: str, so: dict[str, Any] | None = None, threads: int = 16) -> Diff:
    so = so or {}
    old, new = load_side(old_url, so, threads), load_side(new_url, so, threads)
    result = Diff(old, new)
    missing_old = [
        e["url"] for e, lay in zip(old.index["shardlist"], old.layouts, strict=True) if lay is None
    ]
    missing_new = [
        e["url"] for e, lay in zip(new.index["shardlist"], new.layouts, strict=True) if lay is None
    ]
    if missing_new:
        raise DiffError(
            f"{storage.redact(new_url)}: {len(missing_new)} shards have no readable .idx ({missing_new[0]})"
        )
    if missing_old:
        return _from_history(result, missing_old)
    a, b = _where(old), _where(new)
    result.added = sorted(set(b) - set(a))
    result.removed = sorted(set(a) - set(b))
    common = set(a) & set(b)
    olds, news = old.index["shardlist"], new.index["shardlist"]
    suspects = [k for k in common if olds[a[k][0]]["sha256"] != news[b[k][0]]["sha256"]]
    result.changed = sorted(_changed(old, new, a, b, suspects, so, threads))
    return result


def _changed(
    old: Side,
    new: Side,
    a: dict[str, tuple[int, int]],
    b: dict[str, tuple[int, int]],
    keys: list[str],
    so: dict[str, Any],
    threads: int,
) -> list[str]:
    """Keys whose JSON member differs (read only in shards that differ)."""

    def members(side: Side, where: dict[str, tuple[int, int]]) -> dict[str, bytes]:
        wanted: dict[int, list[int]] = {}
        for k in keys:
            s, i = where[k]
            wanted.setdefault(s, []).append(i)

        def one(item: tuple[int, list[int]]) -> dict[str, bytes]:
            s, positions = item
            url = manifest.resolve_entry(side.base, side.index["shardlist"][s]["url"], "url", "")
            layout = side.layouts[s]
            assert layout is not None
            return {layout.keys[i]: raw for i, raw in json_members(url, layout, positions, so).items()}

        out: dict[str, bytes] = {}
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pass-wds-diff") as pool:
            for part in pool.map(one, sorted(wanted.items())):
                out.update(part)
        return out

    before, after = members(old, a), members(new, b)
    return [k for k in keys if before.get(k) != after.get(k)]


def _from_history(result: Diff, missing: list[str]) -> Diff:
    """OLD's replaced shards are gone: what NEW's history says about the revisions since OLD."""
    old, new = result.old, result.new
    history = new.index.get("history", [])
    start = next((i for i, h in enumerate(history) if h["previous_index_sha256"] == old.sha256), None)
    if start is None:
        raise DiffError(
            f"{storage.redact(old.url)}: {len(missing)} of its shards are gone ({missing[0]}) and "
            f"{storage.redact(new.url)} does not descend from it; diff needs both sides' .idx files"
        )
    steps = history[start:]
    removed: list[str] = []
    unrecorded = 0
    for h in steps:
        if "keys" in h["removed"]:
            removed += h["removed"]["keys"]
        else:
            unrecorded += h["removed"]["count"]
    result.removed = sorted(removed)
    revs = (
        f"revisions {steps[0]['revision']}..{steps[-1]['revision']}"
        if len(steps) > 1
        else f"revision {steps[0]['revision']}"
    )
    if unrecorded:
        digests = ", ".join(
            f"r{h['revision']} {h['removed']['count']:,} keys sha256 {h['removed']['sha256']}" for h in steps
        )
        result.notes.append(
            f"{unrecorded:,} removed keys are not listed: the old shards are deleted and {revs} did not record "
            f"the keys (make-shards update --record-keys); the history has their digests: {digests}"
        )
    refreshed = sum(int(h.get("refreshed", 0)) for h in steps)
    if refreshed:
        result.notes.append(
            f"{refreshed:,} samples had their metadata refreshed in {revs} (keys not recorded)"
        )
    return result
