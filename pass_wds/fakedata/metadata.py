"""The metadata CSV: PASS's columns, creator names full of hard text (commas, quotes, newlines, non-ASCII,
numeric- and null-looking strings, empty cells), and the JSON value make-shards must write for each cell."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# hash, unickname, datetaken, latitude, longitude are the columns the TFDS PASS builder reads from the real
# pass_metadata.csv (tensorflow/datasets, datasets/pass/pass.py); the other four are YFCC-100M fields that
# exercise integer, URL and licence columns.
COLUMNS: tuple[str, ...] = (
    "hash",
    "unickname",
    "datetaken",
    "dateuploaded",
    "latitude",
    "longitude",
    "photoid",
    "license",
    "url",
)
REASONS: tuple[str, ...] = (
    "corrupt",
    "empty",
    "not-an-image",
    "decompression-bomb",
    "missing-metadata",
    "duplicate-key",
    "not-a-regular-file",
    "unsafe-path",
)
LICENSES = (
    "https://creativecommons.org/licenses/by/2.0/",
    "https://creativecommons.org/licenses/by/2.0/",
    "https://creativecommons.org/licenses/by/2.0/",
    "https://creativecommons.org/licenses/by-sa/2.0/",
)
# Creator names that break naive CSV/JSON handling. Text must survive exactly: numeric-looking ("1984",
# "007"), null-looking ("NA", "null", "NaN") and padded strings included.
HARD_NAMES = (
    'Smith, John "Jack"',
    "line one\nline two",
    "Zoë Ångström-Éclair",
    "漢字カメラ部",
    "sunset 🌅📷 lover",
    "1984",
    "007",
    "NA",
    "null",
    "NaN",
    "  padded name  ",
    "back\\slash",
    '"',
    "comma,only",
    "Ελληνικά",
    "tab\tname",
)
PLAIN_NAMES = (
    "jdoe",
    "photo_walker",
    "Kiwi Bird",
    "m.lens",
    "aurora-hunter",
    "Old Camera Club",
    "rainyday",
    "field notes",
)
_EPOCH_2000 = 946_684_800


def metadata_row(rng: np.random.Generator, key: str, hard: bool, name: str | None = None) -> dict[str, str]:
    """One CSV row as text cells ('' = empty cell). ``hard`` picks a creator name from HARD_NAMES."""
    names = HARD_NAMES if hard else PLAIN_NAMES
    pick = names[int(rng.integers(0, len(names)))]
    name = pick if name is None else name
    uploaded = _EPOCH_2000 + int(rng.integers(0, 15 * 365 * 86400))
    taken = uploaded - int(rng.integers(0, 3 * 365 * 86400))
    has_date = rng.random() > 0.08
    has_gps = rng.random() < 0.4
    photoid = int(rng.integers(10**6, 2 * 10**10))
    return {
        "hash": key,
        "unickname": name,
        "datetaken": np.datetime_as_string(np.datetime64(taken, "s")).replace("T", " ") + ".0"
        if has_date
        else "",
        "dateuploaded": str(uploaded),
        "latitude": f"{rng.uniform(-90, 90):.6f}" if has_gps else "",
        "longitude": f"{rng.uniform(-180, 180):.6f}" if has_gps else "",
        "photoid": str(photoid),
        "license": LICENSES[int(rng.integers(0, len(LICENSES)))],
        "url": f"http://www.flickr.com/photos/{photoid % 99991}@N00/{photoid}/",
    }


def write_metadata(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """Write rows as RFC-4180 CSV (UTF-8, ``\\n`` line ends, fields quoted only when needed)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for row in rows:
            w.writerow([row[c] for c in COLUMNS])


def read_metadata(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The generated CSV as ``{key: {column: text}}`` (what tests compare the shards' JSON against)."""
    with open(path, encoding="utf-8", newline="") as f:
        return {row["hash"]: row for row in csv.DictReader(f)}


def expected_json_value(column: str, text: str) -> Any:
    """The JSON value make-shards must write for a cell: null for empty, numbers for numeric columns."""
    if text == "":
        return None
    if column in ("dateuploaded", "photoid"):
        return int(text)
    if column in ("latitude", "longitude"):
        return float(text)
    return text
