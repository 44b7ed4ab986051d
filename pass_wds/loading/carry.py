"""Carrying an interrupted epoch across revisions of a dataset (``across_revisions=True``).

``make-shards update`` makes revision ``r + 1`` of an output by rewriting the shards that held removed samples;
its ``index.json`` history says, per replaced shard, the positions removed and their sizes. That is enough to
rebuild the shard list of revision ``r`` (:func:`layouts`) and to map each of its samples onto revision
``r + 1`` (:class:`Step`): a kept sample keeps its shard slot and its order, a removed one maps to nothing.

A loader state saved on revision ``r`` then resumes on revision ``R > r`` like this: the epoch is planned on
revision ``r``'s layout exactly as it was (same counts, same sample sizes for the shuffle buffer), the samples
it had not yet delivered are taken in their order (:meth:`EpochPlanner.unseen`), mapped onto revision ``R``
with the removed ones dropped, and planned there as a new generation (``EpochPlanner.generations(start=…)``):
every kept sample of the interrupted epoch is delivered exactly once, the removed ones never. Pure NumPy; no
sample byte is read (sizes come from the ``.idx`` files of the current revision and the history).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pass_wds.format.manifest import ManifestError
from pass_wds.loading.plan import shard_offsets

SizesFn = Callable[[np.ndarray], np.ndarray]


class LineageError(ManifestError):
    """A dataset's history does not lead back to the revision a state was saved on; one line."""


@dataclass(frozen=True)
class Layout:
    """The shard list of one revision (manifest entries: url, nsamples, filesize, sha256, idx)."""

    revision: int
    shards: list[dict[str, Any]]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(int(e["nsamples"]) for e in self.shards)


def layouts(manifest: dict[str, Any], back_to: int) -> list[Layout]:
    """The layouts of revisions ``back_to`` … current (oldest first), rebuilt from the manifest's history."""
    current = int(manifest.get("revision", 0))
    history = manifest.get("history", [])
    if not 0 <= back_to <= current or len(history) < current:
        raise LineageError(f"revision {back_to} is not in the history of this dataset (revision {current})")
    out = [Layout(current, list(manifest["shardlist"]))]
    for entry in reversed(history[back_to:current]):
        out.append(Layout(int(entry["revision"]) - 1, previous_shardlist(out[-1].shards, entry)))
    return out[::-1]


def previous_shardlist(shardlist: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The shard list before the revision ``entry`` describes (its ``replaced`` old entries put back)."""
    replaced = {int(r["position"]): r for r in entry["replaced"]}
    dropped = {p for p, r in replaced.items() if r.get("new") is None}
    out: list[dict[str, Any]] = []
    it = iter(shardlist)
    for p in range(len(shardlist) + len(dropped)):
        if p in dropped:
            out.append(replaced[p]["old"])
            continue
        current = next(it, None)
        if current is None or (p in replaced and current.get("url") != replaced[p]["new"]):
            raise LineageError(
                f"index.json history of revision {entry['revision']} does not match its shard list at position {p}"
            )
        out.append(replaced[p]["old"] if p in replaced else current)
    if next(it, None) is not None:
        raise LineageError(
            f"index.json history of revision {entry['revision']} does not match its shard list"
        )
    return out


@dataclass
class Step:
    """Revision ``old`` → ``old + 1``: each old global id's new global id (-1: removed), and the sizes the old
    layout had where the new one has none (removed samples) or others (refreshed JSON)."""

    old: Layout
    new: Layout
    to_new: np.ndarray
    sized_ids: np.ndarray = field(repr=False)  # sorted old gids whose size comes from the history
    sized_bytes: np.ndarray = field(repr=False)

    @classmethod
    def of(cls, old: Layout, new: Layout, entry: dict[str, Any]) -> Step:
        old_off, new_off = shard_offsets(old.counts), shard_offsets(new.counts)
        to_new = np.full(int(old_off[-1]), -1, dtype=np.int64)
        replaced = {int(r["position"]): r for r in entry["replaced"]}
        ids: list[int] = []
        sizes: list[int] = []
        q = 0  # position in the new list
        for p, n in enumerate(old.counts):
            rep = replaced.get(p)
            a = int(old_off[p])
            if rep is None:
                to_new[a : a + n] = new_off[q] + np.arange(n)
                q += 1
                continue
            removed = np.array([i for i, _ in rep.get("removed", [])], dtype=np.int64)
            for i, b in [*rep.get("removed", []), *rep.get("refreshed", [])]:
                ids.append(a + int(i))
                sizes.append(int(b))
            if rep.get("new") is None:
                continue
            kept = np.setdiff1d(np.arange(n, dtype=np.int64), removed)
            if len(kept) != new.counts[q]:
                raise LineageError(
                    f"index.json history of revision {entry['revision']}: shard {rep['new']} should hold "
                    f"{len(kept)} samples, the shard list says {new.counts[q]}"
                )
            to_new[a + kept] = new_off[q] + np.arange(len(kept))
            q += 1
        order = np.argsort(np.array(ids, dtype=np.int64), kind="stable")
        return cls(
            old, new, to_new, np.array(ids, dtype=np.int64)[order], np.array(sizes, dtype=np.int64)[order]
        )

    def sizes(self, new_sizes: SizesFn) -> SizesFn:
        """The old layout's sample sizes, from the new layout's (``new_sizes``) and the history."""

        def fn(gids: np.ndarray) -> np.ndarray:
            gids = np.asarray(gids, dtype=np.int64)
            mapped = self.to_new[gids]
            out = np.zeros(len(gids), dtype=np.int64)
            kept = mapped >= 0
            if kept.any():
                out[kept] = new_sizes(mapped[kept])
            if len(self.sized_ids):
                at = np.searchsorted(self.sized_ids, gids)
                hit = (at < len(self.sized_ids)) & (
                    self.sized_ids[np.minimum(at, len(self.sized_ids) - 1)] == gids
                )
                out[hit] = self.sized_bytes[at[hit]]
            return out

        return fn


def steps(manifest: dict[str, Any], back_to: int) -> list[Step]:
    """The steps from revision ``back_to`` to the current one (oldest first)."""
    lays = layouts(manifest, back_to)
    history = manifest.get("history", [])
    return [Step.of(lays[k], lays[k + 1], history[lays[k].revision]) for k in range(len(lays) - 1)]


def layout_sizes(chain: Sequence[Step], current: SizesFn) -> list[SizesFn]:
    """Sizes functions of every layout of ``chain`` (oldest first), then the current one's."""
    fns = [current]
    for step in reversed(chain):
        fns.append(step.sizes(fns[-1]))
    return fns[::-1]
