"""The metadata allowlist of make-shards: CSV / TSV, JSON Lines, JSON or Parquet → :class:`~.rows.Metadata`
(key → the row as compact JSON), and the columns that credit a creator (attribution.csv).

Read as a person meant it: a UTF-8 byte-order mark is ignored, NaN and infinities become null, and what cannot
be resolved without guessing (a key on two rows, a column named twice or like pass-wds's own fields, text that
is not UTF-8, a runaway field) is one line naming the file and, where there is one, the line.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections.abc import Iterable, Iterator
from typing import IO, Any

from pass_wds import storage
from pass_wds.convert.rows import Metadata
from pass_wds.errors import ConfigError, InputError, first_line
from pass_wds.format.samples import CREATOR_COLUMNS, RESERVED_FIELDS

_JSON_ESCAPED = r'[\\"\x00-\x1f]'  # what json.dumps(ensure_ascii=False) escapes in a string
_JSON_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"


MAX_FIELD_BYTES = 1 << 20
"""Largest metadata cell accepted: a bigger one is almost always an unbalanced quote that swallowed the rest
of the file, so it is refused with its line rather than turned into one enormous caption."""


def read_metadata(
    url: str,
    key_column: str = "hash",
    storage_options: dict[str, Any] | None = None,
    *,
    retry: storage.RetryPolicy | None = None,
) -> Metadata:
    """Read CSV/TSV, JSON Lines, JSON or Parquet metadata keyed by ``key_column``.

    Read as a person meant it: a UTF-8 byte-order mark is ignored, NaN and infinities become null (every
    sample JSON is standard JSON), and what cannot be resolved without guessing — a key on two rows, a
    column name used twice, a column named like pass-wds's own fields, text that is not UTF-8, a runaway
    field — is a :class:`InputError` naming the file and, where there is one, the line.
    """
    lower = storage.without_query(url).lower().removesuffix(".gz")
    shown = storage.redact(url)
    try:
        if not storage.exists(url, storage_options, retry=retry):
            raise InputError(f"metadata not found: {shown}")
        so = storage_options
        if lower.endswith((".parquet", ".pq")):
            md = _read_parquet(url, key_column, so, retry)
        elif lower.endswith((".jsonl", ".ndjson")):
            md = _read_jsonl(url, key_column, so, retry)
        elif lower.endswith(".json"):
            md = _read_json(url, key_column, so, retry)
        else:
            md = _read_csv(url, key_column, so, "\t" if lower.endswith(".tsv") else ",", retry)
    except (InputError, storage.StorageError):
        raise
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read metadata {shown}: {first_line(e)}") from None
    if md.first_duplicate is not None:
        key, row = md.first_duplicate
        raise InputError(
            f"metadata {shown}: key {key!r} appears again in row {row} ({md.duplicate_rows} rows repeat a key); "
            "each key must have exactly one row"
        )
    return md


def _check_columns(url: str, columns: Iterable[str], where: str = "") -> None:
    """A column name used twice, or one pass-wds writes itself, would silently lose one of the values."""
    seen: set[str] = set()
    for c in columns:
        if c in seen:
            raise InputError(f"metadata {storage.redact(url)}{where}: column {c!r} appears twice; rename one")
        if c in RESERVED_FIELDS:
            raise InputError(
                f"metadata {storage.redact(url)}{where}: column {c!r} is reserved for pass-wds's own fields "
                "in the sample JSON; rename it"
            )
        seen.add(c)


def _lines(raw: IO[bytes], url: str) -> Iterator[str]:
    """Decoded lines of a text file (a byte-order mark dropped); bytes that are not UTF-8 are a
    :class:`InputError` naming the line."""
    for lineno, line in enumerate(raw, 1):
        try:
            text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise InputError(
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


def _csv_rows(
    url: str, storage_options: dict[str, Any] | None, delimiter: str, retry: storage.RetryPolicy | None = None
) -> Iterator[list[str]]:
    """Rows of a CSV parsed by Python's csv module, each problem an InputError naming the line it starts on.

    Only the header goes through here, and the whole file only once Arrow has refused it: Arrow's errors do not
    say where, and a user needs a line number to fix the file.
    """
    with storage.open_read(url, storage_options, retry=retry) as raw, _field_limit(MAX_FIELD_BYTES):
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
                raise InputError(f"metadata {storage.redact(url)} line {start}: {detail}") from None
            if width is None:
                width = len(row)
            elif row and len(row) != width:
                raise InputError(
                    f"metadata {storage.redact(url)} line {start}: {len(row)} fields, the header has {width}"
                )
            yield row


def _csv_problem(
    url: str,
    storage_options: dict[str, Any] | None,
    delimiter: str,
    error: Exception,
    retry: storage.RetryPolicy | None = None,
) -> InputError:
    """The InputError for a CSV that Arrow refused: re-read in Python to find the line (error path only)."""
    try:
        for _ in _csv_rows(url, storage_options, delimiter, retry):
            pass
    except InputError as located:
        return located
    return InputError(f"cannot read metadata {storage.redact(url)}: {first_line(error)}")


def _missing_key(url: str, key_column: str, columns: list[str]) -> InputError:
    shown = ", ".join(columns[:20]) + (" …" if len(columns) > 20 else "")
    return InputError(f"key column {key_column!r} not found in {storage.redact(url)} (columns: {shown})")


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
            raise InputError(
                f"metadata {storage.redact(url)} {where}: name {dup!r} appears twice in one object"
            )
        return d

    return hook


def _null_constant(_name: str) -> None:
    """``parse_constant``: NaN, Infinity and -Infinity are not JSON; they become null."""
    return None


def _read_csv(
    url: str,
    key_column: str,
    storage_options: dict[str, Any] | None,
    delimiter: str,
    retry: storage.RetryPolicy | None = None,
) -> Metadata:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    columns = next(_csv_rows(url, storage_options, delimiter, retry), None)
    if not columns:
        raise InputError(f"metadata {storage.redact(url)} is empty (no header row)")
    _check_columns(url, columns)
    if key_column not in columns:
        raise _missing_key(url, key_column, columns)

    def batches() -> Iterator[pa.RecordBatch]:
        """Stream the file (twice in all): the whole table is never held in memory."""
        try:
            with storage.open_read(url, storage_options, retry=retry) as raw:
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
            raise _csv_problem(url, storage_options, delimiter, e, retry) from None

    # Pass 1. A column is numeric when every non-empty cell is a JSON number: then its text goes out verbatim,
    # so numbers stay numbers with no float round trip; anything else (leading zeros, NaN, dates) stays text.
    numeric = [name != key_column for name in columns]
    seen = [False] * len(columns)
    for batch in batches():
        for i in range(len(columns)):
            cells = batch.column(i).drop_null()
            seen[i] = seen[i] or len(cells) > 0
            if len(cells) and pc.max(pc.binary_length(cells)).as_py() > MAX_FIELD_BYTES:
                raise _csv_problem(url, storage_options, delimiter, ValueError("field too large"), retry)
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


def _read_jsonl(
    url: str,
    key_column: str,
    storage_options: dict[str, Any] | None,
    retry: storage.RetryPolicy | None = None,
) -> Metadata:
    md = Metadata()
    with storage.open_read(url, storage_options, retry=retry) as raw:
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
                raise InputError(
                    f"metadata {storage.redact(url)} line {lineno} is not JSON: {e.msg}"
                ) from None
            _admit_object(md, url, key_column, row, f"line {lineno}")
    if not md.columns:
        raise InputError(f"metadata {storage.redact(url)} has no rows")
    return md.finish()


def _read_json(
    url: str,
    key_column: str,
    storage_options: dict[str, Any] | None,
    retry: storage.RetryPolicy | None = None,
) -> Metadata:
    raw = storage.read_bytes(url, storage_options, retry=retry)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(
            f"metadata {storage.redact(url)} line {line} is not UTF-8 text; save the file as UTF-8"
        ) from None
    try:
        data = json.loads(
            text, parse_constant=_null_constant, object_pairs_hook=_unique_names(url, "(an object)")
        )
    except json.JSONDecodeError as e:
        raise InputError(
            f"metadata {storage.redact(url)} line {e.lineno} is not valid JSON: {e.msg}"
        ) from None
    if isinstance(data, dict) and key_column not in data:
        # {key: {column: value}} mapping form
        data = [
            {key_column: k, **v} if isinstance(v, dict) else {key_column: k, "value": v}
            for k, v in data.items()
        ]
    if not isinstance(data, list):
        raise InputError(
            f"metadata {storage.redact(url)} must be a JSON list of objects or an object of objects"
        )
    md = Metadata()
    for i, row in enumerate(data):
        _admit_object(md, url, key_column, row, f"item {i}")
    if not md.columns:
        raise InputError(f"metadata {storage.redact(url)} has no rows")
    return md.finish()


def _admit_object(md: Metadata, url: str, key_column: str, row: Any, where: str) -> None:
    if not isinstance(row, dict):
        raise InputError(f"metadata {storage.redact(url)} {where} is not a JSON object")
    if key_column not in row:
        raise _missing_key(url, key_column, list(row))
    if not RESERVED_FIELDS.isdisjoint(row):
        _check_columns(url, row, f" {where}")
    if not md.columns:
        md.columns = list(row)
    md.add(row[key_column], _dump(row)[1:-1])


def _read_parquet(
    url: str,
    key_column: str,
    storage_options: dict[str, Any] | None,
    retry: storage.RetryPolicy | None = None,
) -> Metadata:
    import pyarrow.parquet as pq

    with storage.open_read(url, storage_options, retry=retry) as raw:
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


# ------------------------------------------------------------------------------------------- attribution

_ATTRIBUTION_HINTS = ("licen", "url", "link", "credit", "copyright", "owner", "source")


def _creator(columns: list[str], creator_column: str | None) -> str | None:
    if creator_column:
        if columns and creator_column not in columns:
            raise ConfigError(f"creator column {creator_column!r} not found in metadata")
        return creator_column
    lower = {c.lower(): c for c in columns}
    return next((lower[c] for c in CREATOR_COLUMNS if c in lower), None)


def attribution_columns(
    columns: list[str], *, key_column: str, creator_column: str | None = None
) -> tuple[str, ...]:
    """The columns of attribution.csv: the creator first (``creator_column``, else the first of
    :data:`CREATOR_COLUMNS` present), then every licence / URL-like column (CC-BY asks for both)."""
    creator = _creator(columns, creator_column)
    rest = [
        c
        for c in columns
        if c != creator and c != key_column and any(h in c.lower() for h in _ATTRIBUTION_HINTS)
    ]
    return tuple(([creator] if creator else []) + rest)
