"""Inputs: raw tar archives and image folders (listed, never extracted), and the metadata allowlist.

A raw tar is scanned header by header; each regular member becomes a :class:`SourceItem` holding the byte
offset of its data, so a shard writer can later read exactly that image with one seek. Everything the
listing refuses (directories, links, unsafe paths, duplicates) becomes a :class:`~pass_wds.format.reasons.Rejection` with a reason.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import posixpath
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import braceexpand
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pass_wds import storage
from pass_wds.config import ConfigError
from pass_wds.format.keys import is_unsafe, is_utf8, key_of
from pass_wds.format.reasons import CORRUPT, DUPLICATE_KEY, NOT_REGULAR, UNSAFE_PATH, Rejection
from pass_wds.format.samples import RESERVED_FIELDS
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
class SourceItem:
    """One candidate image: where its bytes are (input index, member, data offset, size)."""

    key: str
    source: int
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
    source: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # index into ``inputs``
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # of the data in the archive
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rejections: list[Rejection] = field(default_factory=list)

    @classmethod
    def of(
        cls, inputs: list[InputSpec], items: Iterable[SourceItem], rejections: Iterable[Rejection] = ()
    ) -> Listing:
        """From item objects (one archive's worth, or a test's)."""
        items = list(items)
        return cls(
            inputs,
            pa.array([i.key for i in items], pa.string()),
            pa.array([i.member for i in items], pa.string()),
            np.fromiter((i.source for i in items), np.int32, len(items)),
            np.fromiter((i.offset for i in items), np.int64, len(items)),
            np.fromiter((i.size for i in items), np.int64, len(items)),
            list(rejections),
        )

    def __len__(self) -> int:
        return len(self.sizes)

    def item(self, i: int) -> SourceItem:
        return SourceItem(
            self.keys[i].as_py(),
            int(self.source[i]),
            self.members[i].as_py(),
            int(self.offsets[i]),
            int(self.sizes[i]),
        )

    @property
    def items(self) -> list[SourceItem]:
        """Item objects, for small listings (tests, one archive's log line): O(n) Python objects."""
        keys, members = self.keys.to_pylist(), self.members.to_pylist()
        return [
            SourceItem(k, int(s), m, int(o), int(z))
            for k, s, m, o, z in zip(keys, self.source, members, self.offsets, self.sizes, strict=True)
        ]

    def take(self, idx: np.ndarray) -> Listing:
        """The rows ``idx`` (rejections are kept as they are)."""
        return Listing(
            self.inputs,
            self.keys.take(idx),
            self.members.take(idx),
            self.source[idx],
            self.offsets[idx],
            self.sizes[idx],
            self.rejections,
        )


def contiguous(column: pa.Array | pa.ChunkedArray | list[pa.Array]) -> pa.Array:
    """One string array from chunks (no copy when there is one); ``large_string`` past 2 GiB of text."""
    chunks = (
        column.chunks
        if isinstance(column, pa.ChunkedArray)
        else [column]
        if isinstance(column, pa.Array)
        else column
    )
    if len(chunks) == 1:
        return chunks[0]
    if not chunks:
        return pa.array([], pa.string())
    try:
        return pa.concat_arrays([c.cast(pa.string()) for c in chunks])
    except pa.ArrowInvalid:  # offsets overflow
        return pa.concat_arrays([c.cast(pa.large_string()) for c in chunks])


def expand_inputs(patterns: Iterable[str], storage_options: dict[str, Any] | None = None) -> list[InputSpec]:
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
                    raise ConfigError(f"input pattern matches nothing: {storage.redact(expanded)}")
            else:
                try:
                    found = fs.exists(path)
                except (OSError, ValueError) as e:
                    raise ConfigError(
                        f"cannot access input {storage.redact(expanded)}: {storage.redact(str(e), storage_options)}"
                    ) from None
                if not found:
                    raise ConfigError(f"input not found: {storage.redact(expanded)}")
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
        raise ConfigError(
            f"compressed tar input is not supported (raw images must be read by offset): {storage.redact(url)}; "
            "decompress it first"
        )
    if lower.endswith(".tar"):
        return InputSpec(url, "tar")
    raise ConfigError(
        f"unsupported input (expected a .tar archive or a folder of images): {storage.redact(url)}"
    )


_COMPRESSION_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


def list_tar(spec: InputSpec, source_index: int, storage_options: dict[str, Any] | None = None) -> Listing:
    """Scan one uncompressed tar's headers; regular members become items, others rejections.

    An archive that cannot be read as a tar at all (compressed, empty, not a regular file, damaged at its
    first header) is one ``corrupt`` or ``not-a-regular-file`` rejection: one bad input of ten must not
    end a run that the other nine can finish.
    """
    items: list[SourceItem] = []
    rejections: list[Rejection] = []
    if storage.is_local(spec.url):
        path = spec.url.removeprefix("file://")
        with contextlib.suppress(OSError):
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open; a device never ends
                rejections.append(Rejection("", spec.name, "", NOT_REGULAR, "input is not a regular file"))
                return Listing.of([spec], items, rejections)
    total = storage.file_size(spec.url, storage_options)
    with storage.open_read(spec.url, storage_options) as f:
        if storage.is_local(spec.url):
            with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        try:
            for entry in scan_tar(f, total):
                _admit_member(items, rejections, spec, source_index, entry)
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
    items: list[SourceItem], rejections: list[Rejection], spec: InputSpec, source_index: int, entry: TarEntry
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
        items.append(SourceItem(key, source_index, name, entry.offset_data, entry.size))


def list_dir(spec: InputSpec, source_index: int, storage_options: dict[str, Any] | None = None) -> Listing:
    """List every regular file under a folder, recursively, in sorted order (hidden files skipped)."""
    fs, root = storage.get_fs(spec.url, storage_options)
    items: list[SourceItem] = []
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
        items.append(SourceItem(key_of(rel), source_index, rel, 0, int(info.get("size") or 0)))
    return Listing.of([spec], items, rejections)


def list_input(spec: InputSpec, source_index: int, storage_options: dict[str, Any] | None = None) -> Listing:
    return (list_tar if spec.kind == "tar" else list_dir)(spec, source_index, storage_options)


def merge_listings(inputs: list[InputSpec], listings: Iterable[Listing]) -> Listing:
    """Concatenate per-input listings in input order; the first occurrence of a key wins.

    Duplicates are found with one Arrow hash pass (each key's first index), not a dict of 14M strings.
    Rejections keep the order a per-item loop would give: each listing's own, then its duplicates.
    """
    listings = list(listings)
    keys = contiguous([x.keys for x in listings])
    members = contiguous([x.members for x in listings])
    source = np.concatenate([x.source for x in listings] or [np.zeros(0, np.int32)]).astype(
        np.int32, copy=False
    )
    offsets = np.concatenate([x.offsets for x in listings] or [np.zeros(0, np.int64)])
    sizes = np.concatenate([x.sizes for x in listings] or [np.zeros(0, np.int64)])
    n = len(sizes)
    first = _first_index(keys)
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
                    inputs[source[i]].name,
                    members[i].as_py(),
                    DUPLICATE_KEY,
                    f"first seen in {inputs[source[j]].name}:{members[j].as_py()}",
                )
            )
        start = end
    merged = Listing(inputs, keys, members, source, offsets, sizes, rejections)
    if len(dup):
        keep = np.ones(n, dtype=bool)
        keep[dup] = False
        merged = merged.take(np.flatnonzero(keep))
    return merged


def _first_index(keys: pa.Array) -> np.ndarray:
    """For every key, the index of its first occurrence (itself unless it is a duplicate): one hash pass."""
    if not len(keys):
        return np.zeros(0, np.int32)
    return pc.index_in(keys, value_set=keys).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def item_url(inputs: list[InputSpec], item: SourceItem) -> str:
    spec = inputs[item.source]
    return spec.url if spec.kind == "tar" else storage.join(spec.url, item.member)


def item_urls(inputs: list[InputSpec], source: Iterable[int], members: Iterable[str]) -> list[str]:
    """:func:`item_url` for columns of items."""
    return [
        inputs[s].url if inputs[s].kind == "tar" else storage.join(inputs[s].url, m)
        for s, m in zip(source, members, strict=True)
    ]


# --------------------------------------------------------------------------------------------- metadata

_JSON_ESCAPED = r'[\\"\x00-\x1f]'  # what json.dumps(ensure_ascii=False) escapes in a string
_JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"


class Metadata(Mapping[str, str]):
    """The allowlist: key → the row as the *inside* of a compact JSON object (``"a":1,"b":"x"``).

    Rows are serialised once, at load time, so shard writers only concatenate bytes and the plan knows each
    sample's JSON size exactly. Keys are one Arrow string column and the serialised rows are spilled to an
    unlinked temporary file with their offsets in NumPy arrays: ten times PASS (14.4M rows) is ~4.4 GB of
    JSON, which must not sit in memory while planning; a shard task reads its ~4,000 rows back by offset.
    """

    CHUNK = 65536  # rows per block of the digest (kept from when rows were held in memory in such blocks)

    def __init__(self, columns: list[str] | None = None) -> None:
        self.columns: list[str] = list(columns or [])
        self.duplicate_rows = 0
        self.first_duplicate: tuple[str, int] | None = None  # (key, 1-based row) of the first repeated key
        self._spill: IO[bytes] = tempfile.TemporaryFile(prefix="pass-wds-metadata-")  # noqa: SIM115 (closed in __del__)
        self._written = 0
        self._key_chunks: list[pa.Array] = []
        self._size_chunks: list[np.ndarray] = []
        self._pending_keys: list[str] = []
        self._pending_bodies: list[bytes] = []
        self._keys = pa.array([], pa.string())
        self._starts = np.zeros(
            0, np.int64
        )  # per row (first occurrence of each key): offset in the spill file
        self._sizes = np.zeros(0, np.int64)
        self._contiguous = True  # rows lie back to back in the spill file (no duplicate was dropped)
        self._lookup: dict[str, int] | None = None

    # building
    def add(self, key: Any, body: str) -> None:
        """Add a row; repeated keys are counted in :meth:`finish` (and refused by :func:`read_metadata`)."""
        if key is None:  # a row without a key can never match an image
            return
        self._pending_keys.append(str(key))
        self._pending_bodies.append(body.encode("utf-8"))
        if len(self._pending_keys) == self.CHUNK:
            self._flush()

    def add_batch(self, keys: pa.Array, bodies: pa.Array) -> None:
        """Add rows from Arrow string columns (no per-row Python): bodies go to the spill file in one write."""
        self._flush()
        valid = pc.is_valid(keys)
        if not pc.all(valid).as_py():
            keys, bodies = keys.filter(valid), bodies.filter(valid)
        bodies = bodies.cast(pa.large_string()) if len(bodies) else bodies
        if not len(keys):
            return
        offsets = np.frombuffer(bodies.buffers()[1], np.int64)[
            bodies.offset : bodies.offset + len(bodies) + 1
        ]
        self._spill.write(memoryview(bodies.buffers()[2])[offsets[0] : offsets[-1]])
        self._written += int(offsets[-1] - offsets[0])
        self._key_chunks.append(keys.cast(pa.string()))
        self._size_chunks.append(np.diff(offsets))

    def _flush(self) -> None:
        if self._pending_keys:
            data = b"".join(self._pending_bodies)
            self._spill.write(data)
            self._written += len(data)
            self._key_chunks.append(pa.array(self._pending_keys, pa.string()))
            self._size_chunks.append(
                np.fromiter(map(len, self._pending_bodies), np.int64, len(self._pending_bodies))
            )
            self._pending_keys, self._pending_bodies = [], []

    def finish(self) -> Metadata:
        self._flush()
        self._spill.flush()
        keys = contiguous(self._key_chunks)
        sizes = np.concatenate(self._size_chunks or [np.zeros(0, np.int64)])
        starts = np.zeros(len(sizes), np.int64)
        np.cumsum(sizes[:-1], out=starts[1:])
        first = _first_index(keys)
        keep = np.flatnonzero(first == np.arange(len(sizes), dtype=first.dtype))
        self.duplicate_rows = len(sizes) - len(keep)
        if self.duplicate_rows:  # refused by read_metadata, naming the first one
            dup = int(np.flatnonzero(first != np.arange(len(sizes), dtype=first.dtype))[0])
            self.first_duplicate = (str(keys[dup].as_py()), dup + 1)
            keys, sizes, starts = keys.take(keep), sizes[keep], starts[keep]
            self._contiguous = False
        self._keys = keys
        self._sizes, self._starts = sizes, starts
        self._key_chunks, self._size_chunks = [], []
        return self

    # reading
    def rows_of(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Row number of every key (-1 for none): one vectorised hash join."""
        if not len(keys):
            return np.zeros(0, np.int64)
        values = self._keys
        if keys.type != values.type:  # one of them is past 2 GiB of text (large_string)
            keys, values = keys.cast(pa.large_string()), values.cast(pa.large_string())
        found = pc.index_in(keys, value_set=values)
        return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    def index_of(self, key: str) -> int:
        """Row number of ``key``, or -1 (builds a dict on first use: for small tables; see :meth:`rows_of`)."""
        if self._lookup is None:
            self._lookup = {k: i for i, k in enumerate(self._keys.to_pylist())}
        return self._lookup.get(key, -1)

    @property
    def keys_array(self) -> pa.Array:
        return self._keys

    def body_sizes(self) -> np.ndarray:
        """UTF-8 size of every row's body, by row number."""
        return self._sizes

    def body_bytes(self, i: int) -> bytes:
        return os.pread(self._spill.fileno(), int(self._sizes[i]), int(self._starts[i]))

    def bodies(self, rows: Iterable[int]) -> list[str | None]:
        """The bodies of ``rows`` (None for -1), in that order: what one shard task carries."""
        return [self.body(r) if r >= 0 else None for r in rows]

    def digest(self) -> str:
        """sha256 over the columns and every row in file order (identifies the allowlist for resume)."""
        h = hashlib.sha256(json.dumps(self.columns).encode("utf-8"))
        fd = self._spill.fileno()
        for a in range(0, len(self._sizes), self.CHUNK):
            sizes = self._sizes[a : a + self.CHUNK]
            h.update(np.cumsum(sizes, dtype=np.int64).tobytes())
            if self._contiguous:
                h.update(os.pread(fd, int(sizes.sum()), int(self._starts[a])))
            else:
                for i in range(a, a + len(sizes)):
                    h.update(self.body_bytes(i))
        return h.hexdigest()

    def body_size(self, i: int) -> int:
        return int(self._sizes[i])

    def body(self, i: int) -> str:
        return self.body_bytes(i).decode("utf-8")

    def __getitem__(self, key: str) -> str:
        i = self.index_of(key)
        if i < 0:
            raise KeyError(key)
        return self.body(i)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys.to_pylist())

    def __len__(self) -> int:
        return len(self._sizes)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._spill.close()


MAX_FIELD_BYTES = 1 << 20
"""Largest metadata cell accepted: a bigger one is almost always an unbalanced quote that swallowed the rest
of the file, so it is refused with its line rather than turned into one enormous caption."""


def read_metadata(
    url: str, key_column: str = "hash", storage_options: dict[str, Any] | None = None
) -> Metadata:
    """Read CSV/TSV, JSON Lines, JSON or Parquet metadata keyed by ``key_column``.

    Read as a person meant it: a UTF-8 byte-order mark is ignored, NaN and infinities become null (every
    sample JSON is standard JSON), and what cannot be resolved without guessing — a key on two rows, a
    column name used twice, a column named like pass-wds's own fields, text that is not UTF-8, a runaway
    field — is a :class:`ConfigError` naming the file and, where there is one, the line.
    """
    lower = storage.without_query(url).lower().removesuffix(".gz")
    shown = storage.redact(url)
    try:
        if not storage.exists(url, storage_options):
            raise ConfigError(f"metadata not found: {shown}")
        if lower.endswith((".parquet", ".pq")):
            md = _read_parquet(url, key_column, storage_options)
        elif lower.endswith((".jsonl", ".ndjson")):
            md = _read_jsonl(url, key_column, storage_options)
        elif lower.endswith(".json"):
            md = _read_json(url, key_column, storage_options)
        else:
            md = _read_csv(
                url, key_column, storage_options, delimiter="\t" if lower.endswith(".tsv") else ","
            )
    except ConfigError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"cannot read metadata {shown}: {_first_line(e)}") from None
    if md.first_duplicate is not None:
        key, row = md.first_duplicate
        raise ConfigError(
            f"metadata {shown}: key {key!r} appears again in row {row} ({md.duplicate_rows} rows repeat a key); "
            "each key must have exactly one row"
        )
    return md


def _check_columns(url: str, columns: Iterable[str], where: str = "") -> None:
    """A column name used twice, or one pass-wds writes itself, would silently lose one of the values."""
    seen: set[str] = set()
    for c in columns:
        if c in seen:
            raise ConfigError(
                f"metadata {storage.redact(url)}{where}: column {c!r} appears twice; rename one"
            )
        if c in RESERVED_FIELDS:
            raise ConfigError(
                f"metadata {storage.redact(url)}{where}: column {c!r} is reserved for pass-wds's own fields "
                "in the sample JSON; rename it"
            )
        seen.add(c)


def _lines(raw: IO[bytes], url: str) -> Iterator[str]:
    """Decoded lines of a text file (a byte-order mark dropped); bytes that are not UTF-8 are a
    :class:`ConfigError` naming the line."""
    for lineno, line in enumerate(raw, 1):
        try:
            text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"metadata {storage.redact(url)} line {lineno} is not UTF-8 text (byte {line[e.start]:#04x}); "
                "save the file as UTF-8"
            ) from None
        yield text


@contextlib.contextmanager
def _field_limit(n: int) -> Iterator[None]:
    old = csv.field_size_limit(n)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _csv_rows(url: str, storage_options: dict[str, Any] | None, delimiter: str) -> Iterator[list[str]]:
    """Rows of a CSV parsed by Python's csv module, each problem a ConfigError naming the line it starts on.

    Only the header goes through here, and the whole file only once Arrow has refused it: Arrow's errors do not
    say where, and a user needs a line number to fix the file.
    """
    with storage.open_read(url, storage_options) as raw, _field_limit(MAX_FIELD_BYTES):
        reader = csv.reader(_lines(raw, url), delimiter=delimiter)
        width = None
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                detail = (
                    f"a field is larger than {MAX_FIELD_BYTES >> 20} MiB (an unbalanced quote?)"
                    if "field larger" in str(e)
                    else str(e)
                )
                raise ConfigError(f"metadata {storage.redact(url)} line {start}: {detail}") from None
            if width is None:
                width = len(row)
            elif row and len(row) != width:
                raise ConfigError(
                    f"metadata {storage.redact(url)} line {start}: {len(row)} fields, the header has {width}"
                )
            yield row


def _csv_problem(
    url: str, storage_options: dict[str, Any] | None, delimiter: str, error: Exception
) -> ConfigError:
    """The ConfigError for a CSV that Arrow refused: re-read in Python to find the line (error path only)."""
    try:
        for _ in _csv_rows(url, storage_options, delimiter):
            pass
    except ConfigError as located:
        return located
    return ConfigError(f"cannot read metadata {storage.redact(url)}: {_first_line(error)}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _missing_key(url: str, key_column: str, columns: list[str]) -> ConfigError:
    shown = ", ".join(columns[:20]) + (" …" if len(columns) > 20 else "")
    return ConfigError(f"key column {key_column!r} not found in {storage.redact(url)} (columns: {shown})")


def _dump(value: Any) -> str:
    """Compact JSON of a row; NaN and infinities (Parquet floats) become null, so strict parsers read it."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _unique_names(url: str, where: str) -> Any:
    """``object_pairs_hook`` refusing a name used twice in one JSON object (json.loads keeps the last)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(pairs)
        if len(d) != len(pairs):
            names = [k for k, _ in pairs]
            dup = next(k for k in names if names.count(k) > 1)
            raise ConfigError(
                f"metadata {storage.redact(url)} {where}: name {dup!r} appears twice in one object"
            )
        return d

    return hook


def _null_constant(_name: str) -> None:
    """``parse_constant``: NaN, Infinity and -Infinity are not JSON; they become null."""
    return None


def _read_csv(url: str, key_column: str, storage_options: dict[str, Any] | None, delimiter: str) -> Metadata:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    columns = next(_csv_rows(url, storage_options, delimiter), None)
    if not columns:
        raise ConfigError(f"metadata {storage.redact(url)} is empty (no header row)")
    _check_columns(url, columns)
    if key_column not in columns:
        raise _missing_key(url, key_column, columns)

    def batches() -> Iterator[pa.RecordBatch]:
        """Stream the file (twice in all): the whole table is never held in memory."""
        try:
            with storage.open_read(url, storage_options) as raw:
                reader = pacsv.open_csv(
                    raw,
                    parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.string() for c in columns},
                        null_values=[""],  # only empty cells are null: "NA", "null", "NaN" are text
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=True,
                    ),
                    read_options=pacsv.ReadOptions(block_size=8 << 20),
                )
                yield from reader
        except (pa.ArrowInvalid, UnicodeDecodeError) as e:
            raise _csv_problem(url, storage_options, delimiter, e) from None

    # Pass 1. A column is numeric when every non-empty cell is a JSON number: then its text goes out verbatim,
    # so numbers stay numbers with no float round trip; anything else (leading zeros, NaN, dates) stays text.
    numeric = [name != key_column for name in columns]
    seen = [False] * len(columns)
    for batch in batches():
        for i in range(len(columns)):
            cells = batch.column(i).drop_null()
            seen[i] = seen[i] or len(cells) > 0
            if len(cells) and pc.max(pc.binary_length(cells)).as_py() > MAX_FIELD_BYTES:
                raise _csv_problem(url, storage_options, delimiter, ValueError("field too large"))
            if (
                numeric[i]
                and len(cells)
                and not pc.all(pc.match_substring_regex(cells, _JSON_NUMBER)).as_py()
            ):
                numeric[i] = False
    numeric = [n and s for n, s in zip(numeric, seen, strict=True)]  # an all-empty column is not numeric

    # Pass 2: serialise each row once, a column at a time in Arrow (per-cell json.dumps was most of the time).
    prefixes = [_dump(n) + ":" for n in columns]
    md = Metadata(list(columns))
    key_idx = columns.index(key_column)
    for batch in batches():
        parts = []
        for i in range(len(columns)):
            cells = batch.column(i)
            text = cells if numeric[i] else _json_strings(cells)
            parts.append(pc.binary_join_element_wise(prefixes[i], pc.fill_null(text, "null"), ""))
        bodies = pc.binary_join_element_wise(*parts, ",") if len(parts) > 1 else parts[0]
        md.add_batch(batch.column(key_idx), bodies)
    pa.default_memory_pool().release_unused()
    return md.finish()


def _json_strings(cells: Any) -> Any:
    """JSON string literals of an Arrow string column (nulls stay null), as ``json.dumps`` writes them.

    Most cells need no escaping and are only quoted, in Arrow; the few with a quote, a backslash or a
    control character go through ``json.dumps``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    quoted = pc.binary_join_element_wise('"', cells, '"', "")
    needs = pc.fill_null(pc.match_substring_regex(cells, _JSON_ESCAPED), False)
    if not pc.any(needs).as_py():
        return quoted
    out = quoted.to_pylist()
    for i in pc.indices_nonzero(needs).to_pylist():
        out[i] = _dump(cells[i].as_py())
    return pa.array(out, type=pa.string())


def _read_jsonl(url: str, key_column: str, storage_options: dict[str, Any] | None) -> Metadata:
    md = Metadata()
    with storage.open_read(url, storage_options) as raw:
        for lineno, line in enumerate(_lines(raw, url), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(
                    line,
                    parse_constant=_null_constant,
                    object_pairs_hook=_unique_names(url, f"line {lineno}"),
                )
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"metadata {storage.redact(url)} line {lineno} is not JSON: {e.msg}"
                ) from None
            _admit_object(md, url, key_column, row, f"line {lineno}")
    if not md.columns:
        raise ConfigError(f"metadata {storage.redact(url)} has no rows")
    return md.finish()


def _read_json(url: str, key_column: str, storage_options: dict[str, Any] | None) -> Metadata:
    raw = storage.read_bytes(url, storage_options)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"metadata {storage.redact(url)} line {line} is not UTF-8 text; save the file as UTF-8"
        ) from None
    try:
        data = json.loads(
            text, parse_constant=_null_constant, object_pairs_hook=_unique_names(url, "(an object)")
        )
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"metadata {storage.redact(url)} line {e.lineno} is not valid JSON: {e.msg}"
        ) from None
    if isinstance(data, dict) and key_column not in data:
        # {key: {column: value}} mapping form
        data = [
            {key_column: k, **v} if isinstance(v, dict) else {key_column: k, "value": v}
            for k, v in data.items()
        ]
    if not isinstance(data, list):
        raise ConfigError(
            f"metadata {storage.redact(url)} must be a JSON list of objects or an object of objects"
        )
    md = Metadata()
    for i, row in enumerate(data):
        _admit_object(md, url, key_column, row, f"item {i}")
    if not md.columns:
        raise ConfigError(f"metadata {storage.redact(url)} has no rows")
    return md.finish()


def _admit_object(md: Metadata, url: str, key_column: str, row: Any, where: str) -> None:
    if not isinstance(row, dict):
        raise ConfigError(f"metadata {storage.redact(url)} {where} is not a JSON object")
    if key_column not in row:
        raise _missing_key(url, key_column, list(row))
    if not RESERVED_FIELDS.isdisjoint(row):
        _check_columns(url, row, f" {where}")
    if not md.columns:
        md.columns = list(row)
    md.add(row[key_column], _dump(row)[1:-1])


def _read_parquet(url: str, key_column: str, storage_options: dict[str, Any] | None) -> Metadata:
    import pyarrow.parquet as pq

    with storage.open_read(url, storage_options) as raw:
        pf = pq.ParquetFile(raw)
        names = pf.schema_arrow.names
        _check_columns(url, names)
        if key_column not in names:
            raise _missing_key(url, key_column, names)
        md = Metadata(list(names))
        for batch in pf.iter_batches(batch_size=65536):
            for row in batch.to_pylist():
                md.add(row[key_column], _dump(row)[1:-1])
    return md.finish()
