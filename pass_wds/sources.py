"""Inputs: raw tar archives and image folders (listed, never extracted), and the metadata allowlist.

A raw tar is scanned header by header; each regular member becomes a :class:`SourceItem` holding the byte
offset of its data, so a shard writer can later read exactly that image with one seek. Everything the
listing refuses (directories, links, unsafe paths, duplicates) becomes a :class:`Rejection` with a reason.
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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import braceexpand
import numpy as np

from pass_wds import storage
from pass_wds.config import ConfigError
from pass_wds.format.keys import is_unsafe, key_of
from pass_wds.format.reasons import CORRUPT, DUPLICATE_KEY, NOT_REGULAR, UNSAFE_PATH
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


@dataclass(frozen=True, slots=True)
class Rejection:
    key: str
    source: str
    member: str
    reason: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "key": self.key,
            "source": self.source,
            "member": self.member,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass
class Listing:
    inputs: list[InputSpec]
    items: list[SourceItem] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


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


def list_tar(spec: InputSpec, source_index: int, storage_options: dict[str, Any] | None = None) -> Listing:
    """Scan one uncompressed tar's headers; regular members become items, others rejections."""
    out = Listing([spec])
    total = storage.file_size(spec.url, storage_options)
    with storage.open_read(spec.url, storage_options) as f:
        if storage.is_local(spec.url):
            with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        try:
            for entry in scan_tar(f, total):
                _admit_member(out, spec, source_index, entry)
        except TarDamaged as e:
            if not out.items and not out.rejections:
                raise ConfigError(f"not a readable tar archive: {storage.redact(spec.url)} ({e})") from None
            # a damaged archive: keep what was listed before the damage, report the rest
            out.rejections.append(Rejection("", spec.name, "", CORRUPT, f"tar damaged after this point: {e}"))
    return out


def _admit_member(out: Listing, spec: InputSpec, source_index: int, entry: TarEntry) -> None:
    name = entry.name
    key = key_of(name)
    if is_unsafe(name):
        out.rejections.append(Rejection(key, spec.name, name, UNSAFE_PATH, "absolute path or '..' component"))
    elif not entry.isreg:
        out.rejections.append(Rejection(key, spec.name, name, NOT_REGULAR, entry.kind()))
    else:
        out.items.append(SourceItem(key, source_index, name, entry.offset_data, entry.size))


def list_dir(spec: InputSpec, source_index: int, storage_options: dict[str, Any] | None = None) -> Listing:
    """List every regular file under a folder, recursively, in sorted order (hidden files skipped)."""
    fs, root = storage.get_fs(spec.url, storage_options)
    out = Listing([spec])
    root = root.rstrip("/")
    for path, info in sorted(fs.find(root, detail=True, withdirs=False).items()):
        rel = path[len(root) :].lstrip("/")
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if info.get("type") not in (None, "file"):
            out.rejections.append(Rejection(key_of(rel), spec.name, rel, NOT_REGULAR, str(info.get("type"))))
            continue
        out.items.append(SourceItem(key_of(rel), source_index, rel, 0, int(info.get("size") or 0)))
    return out


def list_input(spec: InputSpec, source_index: int, storage_options: dict[str, Any] | None = None) -> Listing:
    return (list_tar if spec.kind == "tar" else list_dir)(spec, source_index, storage_options)


def merge_listings(inputs: list[InputSpec], listings: Iterable[Listing]) -> Listing:
    """Concatenate per-input listings in input order; the first occurrence of a key wins."""
    merged = Listing(inputs)
    seen: dict[str, SourceItem] = {}
    for listing in listings:
        merged.rejections.extend(listing.rejections)
        for item in listing.items:
            first = seen.get(item.key)
            if first is not None:
                merged.rejections.append(
                    Rejection(
                        item.key,
                        inputs[item.source].name,
                        item.member,
                        DUPLICATE_KEY,
                        f"first seen in {inputs[first.source].name}:{first.member}",
                    )
                )
                continue
            seen[item.key] = item
            merged.items.append(item)
    return merged


def item_url(inputs: list[InputSpec], item: SourceItem) -> str:
    spec = inputs[item.source]
    return spec.url if spec.kind == "tar" else storage.join(spec.url, item.member)


# --------------------------------------------------------------------------------------------- metadata

_JSON_ESCAPED = r'[\\"\x00-\x1f]'  # what json.dumps(ensure_ascii=False) escapes in a string
_JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"


class Metadata(Mapping[str, str]):
    """The allowlist: key → the row as the *inside* of a compact JSON object (``"a":1,"b":"x"``).

    Rows are serialised once, at load time, so shard writers only concatenate bytes and the plan knows each
    sample's JSON size exactly. They are kept as UTF-8 in large chunks with offset arrays, not as 1.44M
    Python strings: that is what keeps planning PASS under 2 GB.
    """

    CHUNK = 65536

    def __init__(self, columns: list[str] | None = None) -> None:
        self.columns: list[str] = list(columns or [])
        self.duplicate_rows = 0
        self.first_duplicate: tuple[str, int] | None = None  # (key, 1-based row) of the first repeated key
        self._rows = 0
        self._index: dict[str, int] = {}
        self._chunks: list[bytes] = []
        self._ends: list[np.ndarray] = []
        self._pending: list[bytes] = []

    # building
    def add(self, key: Any, body: str) -> None:
        """Add a row; a repeated key is counted (and refused by :func:`read_metadata`), never resolved."""
        self._rows += 1
        if key is None:  # a row without a key can never match an image
            return
        k = str(key)
        if k in self._index:
            self.duplicate_rows += 1
            if self.first_duplicate is None:
                self.first_duplicate = (k, self._rows)
            return
        self._index[k] = len(self._index)
        self._pending.append(body.encode("utf-8"))
        if len(self._pending) == self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._ends.append(np.cumsum([len(b) for b in self._pending], dtype=np.int64))
            self._chunks.append(b"".join(self._pending))
            self._pending = []

    def finish(self) -> Metadata:
        self._flush()
        return self

    # reading
    def index_of(self, key: str) -> int:
        """Row number of ``key``, or -1."""
        return self._index.get(key, -1)

    def body_bytes(self, i: int) -> bytes:
        c, j = divmod(i, self.CHUNK)
        ends = self._ends[c]
        return self._chunks[c][int(ends[j - 1]) if j else 0 : int(ends[j])]

    def digest(self) -> str:
        """sha256 over the columns and every row in file order (identifies the allowlist for resume)."""
        h = hashlib.sha256(json.dumps(self.columns).encode("utf-8"))
        for chunk, ends in zip(self._chunks, self._ends, strict=True):
            h.update(ends.tobytes())
            h.update(chunk)
        return h.hexdigest()

    def body_size(self, i: int) -> int:
        c, j = divmod(i, self.CHUNK)
        ends = self._ends[c]
        return int(ends[j]) - (int(ends[j - 1]) if j else 0)

    def body(self, i: int) -> str:
        return self.body_bytes(i).decode("utf-8")

    def __getitem__(self, key: str) -> str:
        i = self._index.get(key)
        if i is None:
            raise KeyError(key)
        return self.body(i)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


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
        for key, body in zip(batch.column(key_idx).to_pylist(), bodies.to_pylist(), strict=True):
            md.add(key, body)
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
