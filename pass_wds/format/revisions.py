"""Revisions of an output: shard names per revision, the lineage fields of ``index.json``, their validation.

A first conversion is revision 0. ``make-shards update`` makes revision ``r + 1`` by rewriting only the shards
that hold removed (or re-described) samples; a rewritten shard keeps its *slot* (its position in the
shard list, the number in its name) and gets the revision in its name: ``pass-000123.tar`` becomes
``pass-000123-r1.tar``. New names because every cache keyed by URL (the loader's node cache, wids' cache,
a CDN) would otherwise serve the old bytes, and because a reader that opened the old manifest must never
read new bytes under an old name; the slot number because the shard list keeps its order, so the samples of
the untouched shards keep their global positions and a loader state can be carried across (see
:mod:`pass_wds.loading`).

``index.json`` gains ``revision``, ``dataset_version`` (user-given, e.g. ``"v3"``) and ``history``: one entry
per revision with the date, the sha256 of the previous ``index.json`` and of the allowlist or keys file
used, the count and a digest of the removed keys (the keys themselves only when asked), and which shards
were replaced by which, with the positions removed (what a resumed loader needs to map the old epoch onto
the new shards). Everything here is validated before use: a manifest is untrusted input.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from pass_wds.format.errors import ShardError

MAX_HISTORY = 100_000
"""More revisions than any dataset will have; bounds what a reader replays."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def shard_name(name: str, slot: int, revision: int = 0) -> str:
    """The tar of slot ``slot`` as written by revision ``revision`` (revision 0: the first conversion)."""
    return f"{name}-{slot:06d}.tar" if revision == 0 else f"{name}-{slot:06d}-r{revision}.tar"


def idx_name(name: str, slot: int, revision: int = 0) -> str:
    return f"{name}-{slot:06d}.idx" if revision == 0 else f"{name}-{slot:06d}-r{revision}.idx"


def revision_of(index: dict[str, Any]) -> int:
    """The revision of a (validated) manifest; manifests written before revisions existed are revision 0."""
    value = index.get("revision", 0)
    return value if type(value) is int else 0


def keys_digest(keys: Iterable[str]) -> str:
    """sha256 of the sorted, distinct keys, one per line (``LC_ALL=C sort -u keys.txt | sha256sum`` gives the
    same digest when every key of the file was removed), so a steward can check what a revision removed
    without the manifest listing the keys."""
    h = hashlib.sha256()
    for key in sorted(set(keys)):
        h.update(key.encode("utf-8") + b"\n")
    return h.hexdigest()


def superseded_names(index: dict[str, Any]) -> set[str]:
    """Shard and ``.idx`` names that earlier revisions replaced (still on disk only after
    ``--keep-superseded``): the output's own history lists them, so they are pass-wds's to delete."""
    current = {
        v
        for e in index.get("shardlist") or []
        if isinstance(e, dict)
        for k in ("url", "idx")
        if (v := e.get(k))
    }
    names: set[str] = set()
    for entry in index.get("history") or []:
        for rep in entry.get("replaced") or [] if isinstance(entry, dict) else []:
            old = rep.get("old") if isinstance(rep, dict) else None
            if isinstance(old, dict):
                names |= {v for k in ("url", "idx") if isinstance(v := old.get(k), str) and "/" not in v}
    return names - current


# ------------------------------------------------------------------------------------------- validation


def validate_lineage(data: dict[str, Any], where: str, error: type[Exception] = ShardError) -> None:
    """``revision``, ``dataset_version`` and ``history`` when present: types, ranges and sizes, so that
    nothing that reads them (update, diff, inspect, the loader) meets a KeyError or an unbounded list.
    ``error``: the class raised (``manifest.ManifestError`` for the manifest validator); one line naming the field."""

    def bad(field: str, problem: str) -> Exception:
        return error(f"{where}: {field} {problem}")

    revision = data.get("revision", 0)
    if type(revision) is not int or not 0 <= revision <= MAX_HISTORY:
        raise bad("revision", f"must be a whole number between 0 and {MAX_HISTORY}")
    version = data.get("dataset_version")
    if version is not None and not (isinstance(version, str) and 0 < len(version) <= 200):
        raise bad("dataset_version", "must be a string of 1 to 200 characters or null")
    history = data.get("history", [])
    if not isinstance(history, list):
        raise bad("history", "must be a list")
    if len(history) != revision:
        raise bad("history", f"has {len(history)} entries; revision {revision} needs one per revision")
    for i, entry in enumerate(history):
        f = f"history[{i}]"
        if not isinstance(entry, dict):
            raise bad(f, "must be an object")
        if entry.get("revision") != i + 1:
            raise bad(f"{f}.revision", f"must be {i + 1}")
        if not (isinstance(entry.get("date"), str) and _DATE.fullmatch(entry["date"])):
            raise bad(f"{f}.date", "must be a UTC date like 2022-04-01T00:00:00Z")
        if not (
            isinstance(entry.get("previous_index_sha256"), str)
            and _SHA256.fullmatch(entry["previous_index_sha256"])
        ):
            raise bad(f"{f}.previous_index_sha256", "must be 64 lowercase hex digits")
        removed = entry.get("removed")
        if not isinstance(removed, dict) or type(removed.get("count")) is not int or removed["count"] < 0:
            raise bad(f"{f}.removed", "must be an object with a whole-number count")
        if "keys" in removed and not (
            isinstance(removed["keys"], list) and all(isinstance(k, str) for k in removed["keys"])
        ):
            raise bad(f"{f}.removed.keys", "must be a list of strings")
        replaced = entry.get("replaced")
        if not isinstance(replaced, list):
            raise bad(f"{f}.replaced", "must be a list")
        last = -1
        for j, rep in enumerate(replaced):
            _check_replacement(rep, f"{f}.replaced[{j}]", bad)
            if rep["position"] <= last:
                raise bad(f"{f}.replaced[{j}].position", "must be larger than the one before")
            last = rep["position"]


def _check_replacement(rep: Any, f: str, bad: Any) -> None:
    if not isinstance(rep, dict):
        raise bad(f, "must be an object")
    if type(rep.get("position")) is not int or rep["position"] < 0:
        raise bad(f"{f}.position", "must be a whole number >= 0")
    old = rep.get("old")
    if (
        not isinstance(old, dict)
        or not isinstance(old.get("url"), str)
        or type(old.get("nsamples")) is not int
    ):
        raise bad(f"{f}.old", "must be a shard entry with url and nsamples")
    n = old["nsamples"]
    if rep.get("new") is not None and not isinstance(rep["new"], str):
        raise bad(f"{f}.new", "must be a shard name or null")
    for name in ("removed", "refreshed"):
        pairs = rep.get(name, [])
        if not isinstance(pairs, list) or len(pairs) > n:
            raise bad(f"{f}.{name}", f"must be a list of at most {n} [position, bytes] pairs")
        last = -1
        for pair in pairs:
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or any(type(v) is not int for v in pair)
                or not last < pair[0] < n
                or pair[1] < 0
            ):
                raise bad(f"{f}.{name}", f"must hold increasing [position < {n}, bytes >= 0] pairs")
            last = pair[0]
