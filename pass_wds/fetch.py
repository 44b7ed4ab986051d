"""``pass-wds fetch``: download the published PASS archives and metadata, resumably.

The locations come from a small YAML file (``pass_wds/pass-source.yaml``, shipped with the package; ``--sources``
gives another, ``--base-url`` a mirror). Each file is downloaded to ``NAME.part`` with HTTP range requests from
the bytes already there (an interrupted run continues where it stopped), checked (size, and md5/sha256 when
published) and renamed into place only when complete. Sizes are shown and free disk space is checked before
the first byte is fetched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pass_wds import storage
from pass_wds.config import ConfigError, load_yaml

log = logging.getLogger(__name__)

PART = ".part"
CHUNK = 1 << 20
HEADROOM = 1 << 30  # keep this much free beyond what the download needs


@dataclass
class RemoteFile:
    name: str
    url: str
    size: int | None  # from the sources file, else from the server (HEAD), else unknown
    md5: str | None = None
    sha256: str | None = None
    have: int = 0  # bytes already on disk (the .part file, or the whole file when complete)
    complete: bool = False

    @property
    def missing(self) -> int | None:
        return None if self.size is None else self.size - self.have


@dataclass
class FetchPlan:
    dest: Path
    files: list[RemoteFile]
    total_bytes_published: int | None

    @property
    def need(self) -> int:
        """Bytes still to download (unknown sizes counted from the published total)."""
        known = sum(f.missing or 0 for f in self.files if not f.complete)
        unknown = [f for f in self.files if f.size is None and not f.complete]
        if unknown and self.total_bytes_published:
            known += self.total_bytes_published * len(unknown) // max(1, len(self.files))
        return known


def default_sources() -> str:
    return str(resources.files("pass_wds").joinpath("pass-source.yaml"))


def load_sources(path: str | None) -> dict[str, Any]:
    """The sources file: ``base_url``, ``files: [{name, size, md5, sha256}]``, optional ``total_bytes``."""
    src = path or default_sources()
    data = load_yaml(src)
    files = data.get("files")
    if (
        not isinstance(files, list)
        or not files
        or not all(isinstance(f, dict) and f.get("name") for f in files)
    ):
        raise ConfigError(f"--sources {src}: expected 'files:' as a list of {{name: …}} entries")
    if not data.get("base_url"):
        raise ConfigError(f"--sources {src}: no 'base_url'")
    return data


def _local_state(path: Path, size: int | None) -> tuple[int, bool]:
    if path.exists():
        have = path.stat().st_size
        if size is None or have == size:
            return have, True
        raise ConfigError(
            f"{path} exists with {have:,} bytes but the source has {size:,}; remove it to download again"
        )
    part = path.with_name(path.name + PART)
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        raise ConfigError(f"{part} has {have:,} bytes, more than the {size:,} of the source; remove it")
    return have, False


def plan(
    dest: str,
    sources: dict[str, Any],
    *,
    base_url: str | None = None,
    only: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> FetchPlan:
    """What is there, what is missing and how big it is (one HEAD per file whose size is not published)."""
    base = (base_url or str(sources["base_url"])).rstrip("/") + "/"
    entries = sources["files"]
    if only:
        names = {str(f["name"]) for f in entries}
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(
                f"--only: {', '.join(unknown)} not in the sources (have: {', '.join(sorted(names))})"
            )
        entries = [f for f in entries if f["name"] in only]
    out = Path(dest)
    files = []
    for f in entries:
        name = str(f["name"])
        url = base + name
        size = int(f["size"]) if f.get("size") is not None else None
        if size is None:
            try:
                size = storage.file_size(url, storage_options)
            except FileNotFoundError:
                raise ConfigError(f"{storage.redact(url)} not found on the server") from None
            except storage.StorageError:
                raise
            except (TypeError, ValueError):  # the server does not say (no Content-Length)
                size = None
        have, complete = _local_state(out / name, size)
        files.append(RemoteFile(name, url, size, f.get("md5"), f.get("sha256"), have, complete))
    total = sources.get("total_bytes")
    return FetchPlan(out, files, int(total) if total else None)


def _free_bytes(dest: Path) -> int:
    probe = dest.resolve()
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_space(p: FetchPlan) -> None:
    free = _free_bytes(p.dest)
    if p.need + HEADROOM > free:
        raise ConfigError(
            f"not enough free space in {p.dest}: the download needs {p.need / 1e9:,.1f} GB "
            f"(+{HEADROOM / 1e9:.0f} GB headroom), {free / 1e9:,.1f} GB free"
        )


def _gb(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n / 1e9:,.2f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def describe(p: FetchPlan) -> list[str]:
    """One line per file (size and state), then the totals and the free space."""
    lines = []
    for f in p.files:
        state = (
            "done" if f.complete else f"partial, {_gb(f.have)} there, resumes" if f.have else "to download"
        )
        lines.append(f"  {f.name:<20} {_gb(f.size):>14}  {state}")
    total = sum(f.size or 0 for f in p.files)
    unknown = sum(f.size is None for f in p.files)
    lines.append(
        f"{len(p.files)} files, {_gb(total)}"
        + (f" + {unknown} of unknown size" if unknown else "")
        + f"; to download {_gb(p.need)}; "
        f"{_gb(_free_bytes(p.dest))} free in {p.dest}"
    )
    return lines


def _hashers(f: RemoteFile) -> list[tuple[str, Any, str]]:
    out = []
    if f.md5:
        out.append(("md5", hashlib.md5(), str(f.md5).lower()))
    if f.sha256:
        out.append(("sha256", hashlib.sha256(), str(f.sha256).lower()))
    return out


def download(
    f: RemoteFile,
    dest: Path,
    storage_options: dict[str, Any] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Download one file to ``NAME.part`` from the bytes already there, check it, rename it into place."""
    final = dest / f.name
    part = dest / (f.name + PART)
    hashers = _hashers(f)
    if hashers and f.have:
        with open(part, "rb") as existing:  # the checksum covers the whole file, resumed part included
            while chunk := existing.read(CHUNK):
                for _, h, _ in hashers:
                    h.update(chunk)
    with storage.open_stream(f.url, f.have, f.size, storage_options) as src, open(part, "ab") as out:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            for _, h, _ in hashers:
                h.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    got = part.stat().st_size
    if f.size is not None and got != f.size:
        raise storage.StorageError(f"{f.name}: got {got:,} bytes, expected {f.size:,}; rerun to resume")
    for algo, h, want in hashers:
        if h.hexdigest() != want:
            part.unlink()
            raise storage.StorageError(f"{f.name}: {algo} mismatch (the download was removed; rerun)")
    os.replace(part, final)


def fetch(
    p: FetchPlan, storage_options: dict[str, Any] | None = None, progress: bool | None = None
) -> list[str]:
    """Download every incomplete file of the plan (space already checked); returns the summary lines."""
    p.dest.mkdir(parents=True, exist_ok=True)
    todo = [f for f in p.files if not f.complete]
    show = progress if progress is not None else sys.stderr.isatty()
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=p.need or None, unit="B", unit_scale=True, desc="fetch", dynamic_ncols=True)
    t0 = time.monotonic()
    fetched = 0
    try:
        for f in todo:
            started = time.monotonic()
            resumed = f" (resuming at {_gb(f.have)})" if f.have else ""
            log.info("downloading %s, %s%s", f.name, _gb(f.size), resumed)
            before = f.have
            download(f, p.dest, storage_options, on_bytes=bar.update if bar is not None else None)
            got = (p.dest / f.name).stat().st_size - before
            fetched += got
            secs = max(time.monotonic() - started, 1e-9)
            log.info("%s complete: %s in %.1fs (%.1f MB/s)", f.name, _gb(got), secs, got / 1e6 / secs)
    finally:
        if bar is not None:
            bar.close()
    secs = max(time.monotonic() - t0, 1e-9)
    return [
        f"fetched {len(todo)} files ({_gb(fetched)}) in {secs:.1f}s ({fetched / 1e6 / secs:,.1f} MB/s); "
        f"{len(p.files) - len(todo)} already complete",
        f"in {p.dest}: " + " ".join(f.name for f in p.files),
    ]
