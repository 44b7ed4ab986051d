"""The output's manifest files (index.json, stats.json, errors.jsonl, attribution.csv), verify and inspect.

``index.json`` is readable as-is by ``wids`` (``wids-shard-index-v1``; shard URLs relative to the index's
folder, so a copied or re-hosted output still works) and carries what wids ignores: per-shard sha256 and
``.idx`` name, dataset totals, the seed, the effective configuration and the plan digest used for resume.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pass_wds import storage
from pass_wds.writing import ShardResult

INDEX = "index.json"
STATS = "stats.json"
ERRORS = "errors.jsonl"
ATTRIBUTION = "attribution.csv"
UNMATCHED = "metadata_without_image.txt"
KIND = "wids-shard-index-v1"


def shard_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.tar"


def idx_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.idx"


def build_index(
    name: str,
    results: list[ShardResult],
    *,
    seed: int,
    config: dict[str, Any],
    plan_digest: str,
    version: str,
) -> dict[str, Any]:
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
    }


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


def load_index(out: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    url = out if out.endswith(".json") else storage.join(out, INDEX)
    try:
        data = json.loads(storage.read_bytes(url, storage_options))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no {INDEX} at {storage.redact(url)} (not a pass-wds output, or unfinished)"
        ) from None
    if data.get("__kind__") != KIND:
        raise ValueError(f"{storage.redact(url)} is not a {KIND} manifest")
    return data  # type: ignore[no-any-return]


def output_dir(out: str) -> str:
    return out.rsplit("/", 1)[0] if out.endswith(".json") else out


# -------------------------------------------------------------------------------------------------- verify


@dataclass
class ShardCheck:
    url: str
    ok: bool
    problems: list[str]


def check_shard(
    base: str, entry: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> ShardCheck:
    """Re-check one shard against its manifest entry: size, sha256, tar structure, sample count, .idx."""
    url = storage.join(base, entry["url"])
    problems: list[str] = []
    try:
        with storage.open_stream(url, 0, None, storage_options) as f:  # sequential, retried, resumable
            h = hashlib.sha256()
            hashing = _HashingReader(f, h)
            keys: list[str] = []
            size = 0
            try:
                with tarfile.open(fileobj=hashing, mode="r|") as tf:
                    for info in tf:
                        if not info.isreg():
                            problems.append(f"non-regular member {info.name!r}")
                        key = info.name.split("/")[-1].split(".", 1)[0]
                        if not keys or keys[-1] != key:
                            keys.append(key)
            except tarfile.TarError as e:
                problems.append(f"tar structure broken: {e}")
            while hashing.read(1 << 20):
                pass
            size = hashing.count
    except FileNotFoundError:
        return ShardCheck(url, False, ["missing"])
    if size != entry.get("filesize"):
        problems.append(f"size {size} != manifest {entry.get('filesize')}")
    if "sha256" in entry and h.hexdigest() != entry["sha256"]:
        problems.append("sha256 mismatch")
    if len(keys) != entry.get("nsamples"):
        problems.append(f"{len(keys)} samples != manifest {entry.get('nsamples')}")
    if len(set(keys)) != len(keys):
        problems.append("members of a sample are not adjacent (or duplicate keys)")
    if entry.get("idx"):
        from pass_wds.loading.shards import parse_idx  # the loader's parser: one reader of the format

        try:
            samples = parse_idx(
                storage.read_text(storage.join(base, entry["idx"]), storage_options), entry["idx"]
            )
            if len(samples) != entry.get("nsamples"):
                problems.append(f".idx lists {len(samples)} samples")
        except FileNotFoundError:
            problems.append(f"index file {entry['idx']} missing")
        except ValueError as e:
            problems.append(f"index file {entry['idx']}: {e}")
    return ShardCheck(url, not problems, problems)


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
) -> list[ShardCheck]:
    """Check every shard listed in ``index.json``; return the checks (bad ones have ``ok=False``)."""
    index = load_index(out, storage_options)
    base = output_dir(out)
    checks: list[ShardCheck] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for check in pool.map(lambda e: check_shard(base, e, storage_options), index["shardlist"]):
            checks.append(check)
            if on_shard:
                on_shard(check)
    return checks


# ------------------------------------------------------------------------------------------------- inspect


def summarize(out: str, storage_options: dict[str, Any] | None = None) -> str:
    """A human summary: shards, samples, bytes, balance, rejected inputs by reason."""
    index = load_index(out, storage_options)
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
        mean = sum(sizes) / len(sizes)
        dev = max(abs(s - mean) for s in sizes) / mean * 100 if mean else 0.0
        lines.append(
            f"shard size   min {min(sizes):,}  max {max(sizes):,}  mean {mean:,.0f}  (max dev {dev:.1f}%)"
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


def find_sample(out: str, key: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Locate a sample by key through the ``.idx`` files and return its JSON metadata."""
    from pass_wds.loading.shards import parse_idx

    index = load_index(out, storage_options)
    base = output_dir(out)
    for entry in index["shardlist"]:
        if not entry.get("idx"):
            continue
        shard_index = parse_idx(
            storage.read_text(storage.join(base, entry["idx"]), storage_options), entry["idx"]
        )
        for sample_key, members in zip(shard_index.keys, shard_index.members, strict=True):
            for ext, offset, nbytes in members:
                if ext == "json" and sample_key == key:
                    with storage.open_read(storage.join(base, entry["url"]), storage_options) as f:
                        f.seek(offset)
                        meta: dict[str, Any] = json.loads(f.read(nbytes))
                    meta.setdefault("__shard__", entry["url"])
                    return meta
    return None
