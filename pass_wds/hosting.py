"""Hosting an output on an object store or web server: ``upload`` a finished local output, print ``urls``.

``upload`` copies shards, ``.idx`` files and the side files in parallel through :mod:`pass_wds.storage`
(atomic: an interrupted upload never leaves a truncated object under a final name) and writes ``index.json``
last, so a reader that sees the manifest sees a complete dataset. It is resumable: an object already present
with the same sha256 is skipped (S3 ETags are not content hashes for multipart uploads, so an object of the
right size is read back and hashed). Only what pass-wds wrote is ever replaced: a prefix holding foreign
objects is refused unless ``overwrite``, and those objects are never touched. Every uploaded shard is hashed while
it is sent and the upload is discarded if the bytes differ from index.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pass_wds import storage
from pass_wds.format import manifest
from pass_wds.storage.log import get_logger

log = get_logger(__name__)

_PART = 16 * 1024 * 1024  # multipart part size: bounded memory per upload thread


@dataclass
class UploadReport:
    """What an upload did: names uploaded (``index.json`` last), skipped as already present, bytes sent."""

    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    seconds: float = 0.0
    verified: int = 0  # shards read back and checked after the upload (``verify=True``)


@dataclass
class _Item:
    name: str
    size: int
    sha256: str | None  # from index.json (shards); None: compare with the local file's hash


def _local_index(local_out: str) -> tuple[dict[str, Any], bytes]:
    path = os.path.join(local_out, manifest.INDEX)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise storage.StorageNotFoundError(
            f"no {manifest.INDEX} in {local_out} (not a finished pass-wds output; run make-shards first)"
        ) from None
    return manifest.parse_index(raw, path, require_filesize=True), raw


def _plan(local_out: str, index: dict[str, Any]) -> list[_Item]:
    items: list[_Item] = []
    for i, entry in enumerate(index["shardlist"]):
        rel = str(entry["url"])
        manifest.check_entry_url(rel, f"shardlist[{i}].url", local_out)  # upload only what lies inside
        if entry.get("idx"):
            manifest.check_entry_url(entry["idx"], f"shardlist[{i}].idx", local_out)
        path = os.path.join(local_out, rel)
        size = os.path.getsize(path) if os.path.isfile(path) else -1
        if size != entry.get("filesize"):
            raise storage.StorageError(
                f"local shard {path} is missing or has {size} bytes, index.json says {entry.get('filesize')}; "
                f"run `pass-wds verify {local_out}`"
            )
        items.append(_Item(rel, size, entry.get("sha256")))
        if entry.get("idx"):
            idx = os.path.join(local_out, str(entry["idx"]))
            if not os.path.isfile(idx):
                raise storage.StorageError(f"local index file {idx} is missing")
            items.append(_Item(str(entry["idx"]), os.path.getsize(idx), None))
    for name in manifest.SIDE_FILES:
        path = os.path.join(local_out, name)
        if os.path.isfile(path):
            items.append(_Item(name, os.path.getsize(path), None))
    return items


def _sha256_local(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sha256_remote(url: str, so: dict[str, Any] | None, retry: storage.RetryPolicy | None = None) -> str:
    h = hashlib.sha256()
    with storage.open_stream(url, storage_options=so, retry=retry) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def upload(
    local_out: str,
    url: str,
    *,
    workers: int = 8,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    retry: storage.RetryPolicy | None = None,
) -> UploadReport:
    """Copy a finished local output to ``url`` (any fsspec store), ``index.json`` last; resumable.

    Objects already at the destination with the same sha256 are skipped (read back and hashed). ``verify``
    then reads every shard back from ``url`` and checks it against the uploaded ``index.json`` (size, sha256,
    tar structure, sample count, ``.idx``: what ``pass-wds verify URL`` does), raising a StorageError that
    names the bad shards. Objects that neither this output nor an earlier pass-wds
    index.json at ``url`` names are foreign: they refuse the upload unless ``overwrite``, and are never
    replaced or deleted. A destination whose ``index.json`` belongs
    to a different dataset is refused unless ``overwrite`` (then that manifest is removed first, so readers
    never see a mixture).
    """
    started = time.monotonic()
    index, index_raw = _local_index(local_out)
    items = _plan(local_out, index)
    so = storage_options or {}
    storage.makedirs(url, so, retry=retry)
    remote_index = storage.join(url, manifest.INDEX)
    try:
        current = storage.read_bytes(remote_index, so, retry=retry)
    except FileNotFoundError:
        current = None
    old = _remote_manifest(current)
    remote_owned = manifest.listed_names(old)
    foreign = sorted(
        set(storage.listdir(url, so, retry=retry)) - remote_owned - {i.name for i in items} - {manifest.INDEX}
    )
    if foreign and not overwrite:
        names = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise storage.StorageError(
            f"{storage.redact(url)} holds objects pass-wds did not write ({names}); use an empty prefix, "
            "or --overwrite to upload next to them (they are left untouched)"
        )
    if current is not None and current != index_raw:
        if old.get("plan_digest") != index.get("plan_digest") and not overwrite:
            raise storage.StorageError(
                f"{storage.redact(url)} already holds a different dataset (its index.json differs); "
                "use another URL, or --overwrite to replace it"
            )
        storage.remove(remote_index, so)  # readers must not see the old manifest over new shards

    report = UploadReport()
    lock = threading.Lock()
    bar = _progress(sum(i.size for i in items) + len(index_raw), progress)

    def one(item: _Item) -> None:
        local = os.path.join(local_out, item.name)
        remote = storage.join(url, item.name)
        state = _remote_state(item, local, remote, so, retry)
        if state == "same":
            with lock:
                report.skipped.append(item.name)
            bar(item.size)
            return
        if state == "differs" and item.name not in remote_owned:
            raise storage.StorageError(
                f"{storage.redact(remote, so)} exists, differs from {item.name} and is not listed by a pass-wds "
                "index.json there: it is not ours to replace; move it away or use another URL"
            )
        _send(local, remote, so, item)
        with lock:
            report.uploaded.append(item.name)
            report.bytes_uploaded += item.size
        bar(item.size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, items))  # re-raises the first failure; index.json is then not written
    if current == index_raw and report.uploaded == []:
        report.skipped.append(manifest.INDEX)
    else:
        storage.write_bytes(remote_index, index_raw, so)
        report.uploaded.append(manifest.INDEX)
        report.bytes_uploaded += len(index_raw)
    bar(len(index_raw), done=True)
    if verify:
        from pass_wds import verify as verifying

        checks = verifying.verify(url, so, workers=workers)
        bad = [c for c in checks if not c.ok]
        if bad:
            shown = "; ".join(f"{storage.redact(c.url, so)}: {', '.join(c.problems)}" for c in bad[:3])
            raise storage.StorageError(
                f"{len(bad)} of {len(checks)} uploaded shards failed verification ({shown}); rerun the upload"
            )
        report.verified = len(checks)
    report.seconds = time.monotonic() - started
    return report


def _remote_manifest(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) and data.get("__kind__") == manifest.KIND else {}


def _remote_state(
    item: _Item, local: str, remote: str, so: dict[str, Any], retry: storage.RetryPolicy | None = None
) -> str:
    """``absent``, ``same`` (sha256 equal: skipped) or ``differs``. Content, never size alone, decides:
    shards of equal size are common (the planner balances bytes). S3 ETags are no content hash for multipart
    uploads, so an object of the right size is read back and hashed."""
    try:
        size = storage.file_size(remote, so, retry=retry)
    except FileNotFoundError:
        return "absent"
    if size != item.size:
        return "differs"
    expected = item.sha256 or _sha256_local(local)
    if _sha256_remote(remote, so, retry) == expected:
        return "same"
    log.warning("%s has the right size but a different sha256", storage.redact(remote, so))
    return "differs"


def _send(local: str, remote: str, so: dict[str, Any], item: _Item) -> None:
    h = hashlib.sha256()
    with open(local, "rb") as src, storage.atomic_write(remote, so, block_size=_PART) as dst:
        while chunk := src.read(1 << 20):
            h.update(chunk)
            dst.write(chunk)
        if item.sha256 is not None and h.hexdigest() != item.sha256:
            # raising inside the with-block discards the upload: a corrupt shard is never published
            raise storage.StorageError(
                f"local shard {local} does not match its sha256 in index.json; run `pass-wds verify`"
            )


def _progress(total: int, enabled: bool | None) -> Callable[..., None]:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return lambda n, done=False: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc="upload")
    lock = threading.Lock()

    def update(n: int, done: bool = False) -> None:
        with lock:
            bar.update(n)
            if done:
                bar.close()

    return update


# ------------------------------------------------------------------------------------------------- urls

_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[A-Za-z0-9.]+)$")


def resolve(base: str, rel: str) -> str:
    """An absolute URL for ``rel`` (as listed in index.json) relative to the folder ``base``."""
    if "://" in rel or rel.startswith("/"):
        return rel
    if base.startswith(("http://", "https://")):
        return urllib.parse.urljoin(base.rstrip("/") + "/", rel)
    if storage.is_local(base) and not base.startswith("file://"):
        return os.path.normpath(os.path.join(os.path.abspath(base), rel))
    scheme, _, path = base.partition("://")
    return f"{scheme}://{posixpath.normpath(posixpath.join(path.rstrip('/'), rel))}"


def urls(
    source: str | list[str],
    base: str | None = None,
    brace: bool = False,
    storage_options: dict[str, Any] | None = None,
    allow_external_urls: bool = False,
    retry: storage.RetryPolicy | None = None,
) -> list[str]:
    """Absolute shard URLs of an output (folder/URL or its index.json), in shard order.

    index.json lists shards relative to its own folder; they are resolved against ``base`` when given (the
    place the output is hosted), else against the index's location. ``brace`` collapses consecutively
    numbered shards into brace patterns such as ``s3://b/p/pass-{000000..000012}.tar`` (one per run).
    """
    from pass_wds.dataset import resolve as resolve_source

    # Listing URLs reads no sample: raw archives (e.g. to convert from where they are hosted) list as they are.
    ds = resolve_source(
        source,
        storage_options,
        counts=False,
        allow_external_urls=allow_external_urls,
        allow_raw_archives=True,
        retry=retry,
    )
    if ds.manifest is not None and ds.folder is not None:
        folder = base or ds.folder
        out = [resolve(folder, str(e["url"])) for e in ds.manifest["shardlist"]]
    elif base:
        out = [resolve(base, posixpath.basename(s.url)) for s in ds.shards]
    else:
        out = [resolve(".", s.url) if storage.is_local(s.url) else s.url for s in ds.shards]
    return brace_patterns(out) if brace else out


def brace_patterns(names: list[str]) -> list[str]:
    """Collapse runs of consecutively numbered names (same prefix, suffix and digit width) to ``{a..b}``."""
    out: list[str] = []
    run: list[tuple[str, int, str, int]] = []  # prefix, number, suffix, width

    def flush() -> None:
        if not run:
            return
        prefix, first, suffix, width = run[0]
        last = run[-1][1]
        if len(run) == 1:
            out.append(f"{prefix}{first:0{width}d}{suffix}")
        else:
            out.append(f"{prefix}{{{first:0{width}d}..{last:0{width}d}}}{suffix}")
        run.clear()

    for name in names:
        m = _NUMBERED.match(name)
        if not m:
            flush()
            out.append(name)
            continue
        prefix, digits, suffix = m.groups()
        cur = (prefix, int(digits), suffix, len(digits))
        if run and (
            run[-1][0] != prefix
            or run[-1][2] != suffix
            or run[-1][3] != len(digits)
            or run[-1][1] + 1 != cur[1]
        ):
            flush()
        run.append(cur)
    flush()
    return out
