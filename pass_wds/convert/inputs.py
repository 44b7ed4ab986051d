"""Inputs of make-shards: raw tar archives and image folders, expanded and listed (never extracted).

A raw tar is scanned header by header; each regular member becomes an :class:`InputItem` holding the byte
offset of its data, so a shard writer can later read exactly that image with one seek. Everything the
listing refuses (directories, links, unsafe paths, duplicates) becomes a
:class:`~pass_wds.format.reasons.Rejection` with a reason. The allowlist is read by :mod:`.metadata`.

(An *input* is what make-shards reads; a *source*, in :mod:`pass_wds.dataset`, is what a reader of shards
is given.)
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import braceexpand
import numpy as np
import pyarrow as pa

from pass_wds import storage
from pass_wds.convert.columns import contiguous, first_index
from pass_wds.errors import InputError
from pass_wds.format.keys import is_unsafe, is_utf8, key_of
from pass_wds.format.reasons import CORRUPT, DUPLICATE_KEY, NOT_REGULAR, UNSAFE_PATH, Rejection
from pass_wds.format.tar import TarDamaged, TarEntry, scan_tar

_GLOB_CHARS = re.compile(r"[*?\[]")
_COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One expanded input: a raw tar archive or a folder of image files."""

    url: str
    kind: str  # "tar" | "dir"

    @property
    def name(self) -> str:
        """Location-independent name recorded in provenance (so outputs do not depend on where inputs lie)."""
        path = storage.without_query(self.url).rstrip("/")  # a presigned URL's signature is not its name
        return posixpath.basename(path) or storage.redact(self.url)


@dataclass(frozen=True, slots=True)
class InputItem:
    """One candidate image: where its bytes are (input index, member, data offset, size)."""

    key: str
    input_index: int
    member: str
    offset: int
    size: int


@dataclass
class Listing:
    """Candidate images as columns (Arrow strings, NumPy integers), not one Python object per image: at ten
    times PASS scale (14.4M images) per-item objects alone would need ~15 GB. Rows are in listing order."""

    inputs: list[InputSpec]
    keys: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))  # one contiguous column each:
    members: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))  # takes are then cheap
    input_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # into ``inputs``
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # of the data in the archive
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rejections: list[Rejection] = field(default_factory=list)

    @classmethod
    def of(
        cls, inputs: list[InputSpec], items: Iterable[InputItem], rejections: Iterable[Rejection] = ()
    ) -> Listing:
        """From item objects (one archive's worth, or a test's)."""
        items = list(items)
        return cls(
            inputs,
            pa.array([i.key for i in items], pa.string()),
            pa.array([i.member for i in items], pa.string()),
            np.fromiter((i.input_index for i in items), np.int32, len(items)),
            np.fromiter((i.offset for i in items), np.int64, len(items)),
            np.fromiter((i.size for i in items), np.int64, len(items)),
            list(rejections),
        )

    def __len__(self) -> int:
        return len(self.sizes)

    def item(self, i: int) -> InputItem:
        return InputItem(
            self.keys[i].as_py(),
            int(self.input_index[i]),
            self.members[i].as_py(),
            int(self.offsets[i]),
            int(self.sizes[i]),
        )

    @property
    def items(self) -> list[InputItem]:
        """Item objects, for small listings (tests, one archive's log line): O(n) Python objects."""
        keys, members = self.keys.to_pylist(), self.members.to_pylist()
        return [
            InputItem(k, int(s), m, int(o), int(z))
            for k, s, m, o, z in zip(keys, self.input_index, members, self.offsets, self.sizes, strict=True)
        ]

    def take(self, idx: np.ndarray) -> Listing:
        """The rows ``idx`` (rejections are kept as they are)."""
        return Listing(
            self.inputs,
            self.keys.take(idx),
            self.members.take(idx),
            self.input_index[idx],
            self.offsets[idx],
            self.sizes[idx],
            self.rejections,
        )


def expand_inputs(
    patterns: Iterable[str],
    storage_options: dict[str, Any] | None = None,
    *,
    retry: storage.RetryPolicy | None = None,
) -> list[InputSpec]:
    """Expand paths, globs and brace patterns (``PASS.{0..9}.tar``) into existing tar files and folders."""
    specs: list[InputSpec] = []
    seen: set[str] = set()
    for pattern in patterns:
        for expanded in braceexpand.braceexpand(pattern):
            fs, path = storage.get_fs(expanded, storage_options)
            proto = _protocol(expanded)
            if _GLOB_CHARS.search(path):
                matches = sorted(fs.glob(path))
                if not matches:
                    raise InputError(f"input pattern matches nothing: {storage.redact(expanded)}")
            else:
                try:
                    found = storage.exists(expanded, storage_options, retry=retry)
                except storage.StorageError:
                    raise  # it names the input and the cause already
                except (OSError, ValueError) as e:
                    raise InputError(
                        f"cannot access input {storage.redact(expanded)}: {storage.redact(str(e), storage_options)}"
                    ) from None
                if not found:
                    raise InputError(f"input not found: {storage.redact(expanded)}")
                matches = [path]
            for m in matches:
                url = m if proto is None or "://" in m else f"{proto}://{m}"  # http paths keep their scheme
                if url in seen:
                    continue
                seen.add(url)
                specs.append(_classify(fs, m, url))
    return specs


def _protocol(url: str) -> str | None:
    return url.split("://", 1)[0] if "://" in url and not url.startswith("file://") else None


def _classify(fs: Any, path: str, url: str) -> InputSpec:
    if fs.isdir(path):
        return InputSpec(url, "dir")
    lower = storage.without_query(url).lower()
    if lower.endswith(_COMPRESSED_TAR):
        raise InputError(
            f"compressed tar input is not supported (raw images must be read by offset): {storage.redact(url)}; "
            "decompress it first"
        )
    if lower.endswith(".tar"):
        return InputSpec(url, "tar")
    raise InputError(
        f"unsupported input (expected a .tar archive or a folder of images): {storage.redact(url)}"
    )


_COMPRESSION_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


def list_tar(
    spec: InputSpec,
    input_index: int,
    storage_options: dict[str, Any] | None = None,
    *,
    retry: storage.RetryPolicy | None = None,
) -> Listing:
    """Scan one uncompressed tar's headers; regular members become items, others rejections.

    An archive that cannot be read as a tar at all (compressed, empty, not a regular file, damaged at its
    first header) is one ``corrupt`` or ``not-a-regular-file`` rejection: one bad input of ten must not
    end a run that the other nine can finish.
    """
    items: list[InputItem] = []
    rejections: list[Rejection] = []
    if storage.is_local(spec.url):
        path = spec.url.removeprefix("file://")
        with contextlib.suppress(OSError):
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open; a device never ends
                rejections.append(Rejection("", spec.name, "", NOT_REGULAR, "input is not a regular file"))
                return Listing.of([spec], items, rejections)
    total = storage.file_size(spec.url, storage_options, retry=retry)
    with storage.open_read(spec.url, storage_options, retry=retry) as f:
        if storage.is_local(spec.url):
            with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        try:
            for entry in scan_tar(f, total):
                _admit_member(items, rejections, spec, input_index, entry)
        except TarDamaged as e:
            if not items and not rejections:
                f.seek(0)
                magic = f.read(6)
                kind = next((k for m, k in _COMPRESSION_MAGIC.items() if magic.startswith(m)), None)
                detail = f"{kind}-compressed, not a tar (decompress it first)" if kind else str(e)
                rejections.append(
                    Rejection("", spec.name, "", CORRUPT, f"not a readable tar archive: {detail}")
                )
            else:  # a damaged archive: keep what was listed before the damage, report the rest
                rejections.append(Rejection("", spec.name, "", CORRUPT, f"tar damaged after this point: {e}"))
    return Listing.of([spec], items, rejections)


def _admit_member(
    items: list[InputItem], rejections: list[Rejection], spec: InputSpec, input_index: int, entry: TarEntry
) -> None:
    name = entry.name
    key = key_of(name)
    if is_unsafe(name):
        rejections.append(Rejection(key, spec.name, name, UNSAFE_PATH, "absolute path or '..' component"))
    elif not is_utf8(name):
        rejections.append(Rejection(key, spec.name, name, UNSAFE_PATH, "name is not valid UTF-8"))
    elif not entry.isreg:
        rejections.append(Rejection(key, spec.name, name, NOT_REGULAR, entry.kind()))
    else:
        items.append(InputItem(key, input_index, name, entry.offset_data, entry.size))


def list_dir(spec: InputSpec, input_index: int, storage_options: dict[str, Any] | None = None) -> Listing:
    """List every regular file under a folder, recursively, in sorted order (hidden files skipped)."""
    fs, root = storage.get_fs(spec.url, storage_options)
    items: list[InputItem] = []
    rejections: list[Rejection] = []
    root = root.rstrip("/")
    for path, info in sorted(fs.find(root, detail=True, withdirs=False).items()):
        rel = path[len(root) :].lstrip("/")
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if info.get("type") not in (None, "file"):
            rejections.append(Rejection(key_of(rel), spec.name, rel, NOT_REGULAR, str(info.get("type"))))
            continue
        if not is_utf8(rel):
            rejections.append(Rejection(key_of(rel), spec.name, rel, UNSAFE_PATH, "name is not valid UTF-8"))
            continue
        items.append(InputItem(key_of(rel), input_index, rel, 0, int(info.get("size") or 0)))
    return Listing.of([spec], items, rejections)


def list_input(
    spec: InputSpec,
    input_index: int,
    storage_options: dict[str, Any] | None = None,
    *,
    retry: storage.RetryPolicy | None = None,
) -> Listing:
    if spec.kind == "tar":
        return list_tar(spec, input_index, storage_options, retry=retry)
    return list_dir(spec, input_index, storage_options)


def merge_listings(inputs: list[InputSpec], listings: Iterable[Listing]) -> Listing:
    """Concatenate per-input listings in input order; the first occurrence of a key wins.

    Duplicates are found with one Arrow hash pass (each key's first index), not a dict of 14M strings.
    Rejections keep the order a per-item loop would give: each listing's own, then its duplicates.
    """
    listings = list(listings)
    keys = contiguous([x.keys for x in listings])
    members = contiguous([x.members for x in listings])
    input_index = np.concatenate([x.input_index for x in listings] or [np.zeros(0, np.int32)]).astype(
        np.int32, copy=False
    )
    offsets = np.concatenate([x.offsets for x in listings] or [np.zeros(0, np.int64)])
    sizes = np.concatenate([x.sizes for x in listings] or [np.zeros(0, np.int64)])
    n = len(sizes)
    first = first_index(keys)
    dup = np.flatnonzero(first != np.arange(n, dtype=first.dtype))
    rejections: list[Rejection] = []
    start = 0
    for x in listings:
        rejections.extend(x.rejections)
        end = start + len(x)
        for i in dup[(dup >= start) & (dup < end)].tolist():
            j = int(first[i])
            rejections.append(
                Rejection(
                    keys[i].as_py(),
                    inputs[input_index[i]].name,
                    members[i].as_py(),
                    DUPLICATE_KEY,
                    f"first seen in {inputs[input_index[j]].name}:{members[j].as_py()}",
                )
            )
        start = end
    merged = Listing(inputs, keys, members, input_index, offsets, sizes, rejections)
    if len(dup):
        keep = np.ones(n, dtype=bool)
        keep[dup] = False
        merged = merged.take(np.flatnonzero(keep))
    return merged


def item_url(inputs: list[InputSpec], item: InputItem) -> str:
    spec = inputs[item.input_index]
    return spec.url if spec.kind == "tar" else storage.join(spec.url, item.member)


def item_urls(inputs: list[InputSpec], input_index: Iterable[int], members: Iterable[str]) -> list[str]:
    """:func:`item_url` for columns of items."""
    return [
        inputs[s].url if inputs[s].kind == "tar" else storage.join(inputs[s].url, m)
        for s, m in zip(input_index, members, strict=True)
    ]
