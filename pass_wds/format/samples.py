"""What a sample holds: the image formats written and read, and its JSON member, built and parsed here.

The sample JSON is ``{<metadata columns in file order>, "_provenance": {key, source, member, width, height,
format, bytes, crc32[, original_width, original_height, original_format]}}`` as compact UTF-8. make-shards
builds it (:func:`build_sample_json`), the planner predicts its size before any image is opened
(:func:`estimate_json_size`, :func:`estimate_json_sizes`), and the loader, ``inspect`` and ``bench`` parse it
(:func:`parse_sample_json`).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

EXTENSIONS = {
    "JPEG": "jpg",
    "MPO": "jpg",  # a JPEG with extra frames; every JPEG decoder reads the first
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "TIFF": "tif",
    "BMP": "bmp",
    "JPEG2000": "jp2",
    "AVIF": "avif",
    "HEIF": "heic",
    "PPM": "ppm",
}
"""The one list of image formats (Pillow's name → the extension written). make-shards keeps exactly these
(the rest is rejected as ``unsupported-format`` unless re-encoded to JPEG) and the loader reads exactly
these, so no written sample is skipped at every epoch."""

EXTENSION_ALIASES = frozenset({"jpeg", "tiff", "pgm", "pbm"})
"""Other names of the same formats, as other tools write them in foreign shards."""


PROVENANCE = "_provenance"
RESERVED_FIELDS = frozenset({PROVENANCE})
"""Top-level names of the sample JSON that pass-wds writes itself; a metadata column may not use them."""
CHECKSUM = "crc32"
"""Field of ``_provenance``: CRC-32 of the stored image bytes as 8 hex digits (written by make-shards)."""

IMAGE_EXTS = frozenset(EXTENSIONS.values()) | EXTENSION_ALIASES
"""Member extensions the loader decodes as the image of a sample."""

CREATOR_COLUMNS = ("unickname", "creator", "author", "artist", "photographer", "owner", "username", "user")
"""Metadata columns (case-insensitive, in this order) that name the creator to credit: make-shards puts the
first one present into attribution.csv unless told which, and ``preview`` captions samples with it."""


def image_checksum(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


def checksum_problem(image: bytes, meta: dict[str, Any]) -> str | None:
    """Why ``image`` is not the image make-shards stored for this sample JSON, or None. Samples without a
    recorded checksum (foreign shards, older outputs) pass."""
    prov = meta.get(PROVENANCE)
    if not isinstance(prov, dict):
        return None
    expected = prov.get(CHECKSUM)
    if isinstance(prov.get("bytes"), int) and prov["bytes"] != len(image):
        return f"image is {len(image)} bytes, make-shards stored {prov['bytes']}"
    if isinstance(expected, str) and image_checksum(image) != expected:
        return f"image bytes do not match the crc32 recorded by make-shards ({expected})"
    return None


# ------------------------------------------------------------------------------------------ build, parse


def provenance(
    key: str,
    source: str,
    member: str,
    *,
    width: int,
    height: int,
    format: str,
    data: bytes,
    original: tuple[int, int, str] | None = None,
) -> dict[str, Any]:
    """Where a sample came from and what its stored image is; ``crc32`` of the stored bytes lets the loader
    catch silent corruption (zlib's CRC-32: in the standard library, ~1 GB/s, fixed 8 hex digits).
    ``original``: width, height and format before a re-encode."""
    prov: dict[str, Any] = {
        "key": key,
        "source": source,
        "member": member,
        "width": width,
        "height": height,
        "format": format,
        "bytes": len(data),
        CHECKSUM: image_checksum(data),
    }
    if original is not None:
        prov.update(original_width=original[0], original_height=original[1], original_format=original[2])
    return prov


def build_sample_json(row: str | None, prov: dict[str, Any]) -> bytes:
    """``{<metadata columns in file order>, "_provenance": {...}}`` as compact UTF-8 JSON; ``row`` is the
    inside of the metadata row's JSON object (``"a":1,"b":"x"``), serialised once when the allowlist is read."""
    tail = "{" + ",".join(f'"{k}":{_json_value(v)}' for k, v in prov.items()) + "}"
    body = f"{row}," if row else ""
    return ("{" + body + f'"{PROVENANCE}":' + tail + "}").encode("utf-8")


def parse_sample_json(raw: bytes | str | None) -> dict[str, Any]:
    """A sample's JSON member as a dict (``{}`` when there is none; a JSON value that is not an object is
    ``{"value": …}``, as webdataset's foreign shards may hold). Raises ``ValueError`` when it is not JSON."""
    if raw is None:
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {"value": value}


_ROW_END = ',"' + PROVENANCE + '":'


def sample_row(raw: bytes) -> str | None:
    """The metadata row inside a sample JSON that :func:`build_sample_json` wrote, exactly as it was serialised
    (``"a":1``), or None when the sample has no row. ``_provenance`` is always the last field, and its name
    cannot occur unescaped inside a JSON string, so the row ends where that field begins."""
    text = raw.decode("utf-8")
    cut = text.rfind(_ROW_END)
    if cut > 0 and text.startswith("{"):
        return text[1:cut]
    if text.startswith("{" + _ROW_END[1:]):
        return None
    raise ValueError("not a sample JSON written by make-shards (no trailing _provenance field)")


def with_row(raw: bytes, row: str | None) -> bytes:
    """The same sample JSON with another metadata row (``make-shards update --refresh-metadata``): the
    ``_provenance`` field is kept byte for byte."""
    text = raw.decode("utf-8")
    old = sample_row(raw)
    tail = text[1 + (len(old) + 1 if old is not None else 0) :]
    return ("{" + (f"{row}," if row else "") + tail).encode("utf-8")


def _json_value(v: Any) -> str:
    """Compact JSON of a provenance value: what ``json.dumps(..., ensure_ascii=False)`` writes, cheaper."""
    if isinstance(v, str):
        return _encode_basestring(v)  # type: ignore[no-any-return]
    if type(v) is int:
        return str(v)
    return json.dumps(v, ensure_ascii=False)


_encode_basestring = json.encoder.encode_basestring  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------- size estimate


def estimate_json_size(key: str, source: str, member: str, size: int, row_bytes: int | None) -> int:
    """The JSON member's size before the image is opened: exact but for width/height, assumed 4 digits
    (tar padding to 512 bytes absorbs the difference). ``row_bytes``: UTF-8 size of the row body, if any.

    Adds string lengths to a precomputed template length instead of serialising a dict.
    """
    n = _TEMPLATE_LEN + _json_len(key) + _json_len(source) + _json_len(member) + len(str(size))
    return n if row_bytes is None else n + row_bytes + 1


def _json_len(text: str) -> int:
    """UTF-8 length of ``text`` as a JSON string literal, quotes included (as :func:`build_sample_json`
    writes it)."""
    return len(_encode_basestring(text).encode("utf-8"))


def estimate_json_sizes(
    keys: Any, source_json_len: np.ndarray, members: Any, sizes: np.ndarray, row_bytes: np.ndarray | None
) -> np.ndarray:
    """:func:`estimate_json_size` for columns (Arrow string keys and members, NumPy sizes; ``row_bytes``
    -1 where an item has no row), with the same results, without a Python call per item (the planner calls
    this for 1.44M items for PASS)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = _TEMPLATE_LEN + json_string_lengths(keys) + source_json_len + json_string_lengths(members)
    n += pc.utf8_length(pc.cast(pa.array(sizes, pa.int64()), pa.string())).to_numpy().astype(np.int64)
    if row_bytes is not None:
        n += np.where(row_bytes >= 0, row_bytes + 1, 0)
    return n  # type: ignore[no-any-return]


def json_string_lengths(texts: Any) -> np.ndarray:
    """:func:`_json_len` of every string of an Arrow column: its UTF-8 length plus two quotes, except for the
    few that need escapes (quotes, backslashes, control characters), which are serialised one by one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = pc.add(pc.binary_length(texts), 2).to_numpy(zero_copy_only=False).astype(np.int64)
    escaped = pc.match_substring_regex(texts, r'[\x00-\x1f"\\]')
    if isinstance(escaped, pa.ChunkedArray):
        escaped = escaped.combine_chunks()
    for i in pc.indices_nonzero(escaped).to_pylist():
        n[i] = _json_len(texts[i].as_py())
    return n


# The provenance JSON with empty strings and a one-digit size (width/height 1000: four digits each), less
# those 3 × 2 quotes and 1 digit.
_TEMPLATE_LEN = (
    len(build_sample_json(None, provenance("", "", "", width=1000, height=1000, format="JPEG", data=b""))) - 7
)
