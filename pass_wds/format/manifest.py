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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pass_wds import storage
from pass_wds.format.errors import ShardError
from pass_wds.format.idx import ShardIndex, idx_url_for

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
