"""Sample keys: how a file name becomes a key, and how a key is made safe for every tar reader."""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

MAX_KEY_LEN = 64
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CLEANED = re.compile(r"_[0-9a-f]{12}")
"""The suffix every cleaned key ends with; a real key that ends like it is cleaned too, so the two sets of
keys can never meet (before, ``a b.jpeg`` and a file named like its cleaned form got the same key)."""


def key_of(member: str) -> str:
    """The key of an image is its file name without the last extension (``dir/ab12.jpeg`` → ``ab12``)."""
    base = posixpath.basename(member)
    stem, dot, _ext = base.rpartition(".")
    return stem if dot and stem else base


def is_unsafe(member: str) -> bool:
    """Absolute paths and paths with a ``..`` component are never followed or written anywhere."""
    if member.startswith("/") or member.startswith("\\") or re.match(r"^[A-Za-z]:", member):
        return True
    return ".." in re.split(r"[/\\]", member)


def is_utf8(name: str) -> bool:
    """Tar names that are not UTF-8 (decoded with surrogate escapes) cannot be keys in UTF-8 JSON or Arrow."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_key(key: str) -> str:
    """A sample key that webdataset, wids, DALI and GNU tar all split the same way.

    Keys of ASCII letters, digits, ``_`` and ``-`` up to 64 characters are kept as they are (all PASS hashes);
    anything else (dots, spaces, non-ASCII, very long names) is made safe and suffixed with ``_`` and 12 hex
    digits of a hash of the original, so two different keys can never collide. A key that already ends
    like that is cleaned as well: no real key can equal another input's cleaned key. The original is kept
    in the sample's JSON.
    """
    if len(key) <= MAX_KEY_LEN and _SAFE_KEY.fullmatch(key) and not _CLEANED.search(key[-13:]):
        return key
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", key.encode("ascii", "replace").decode("ascii")).strip("_")
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
    return f"{cleaned[: MAX_KEY_LEN - 13]}_{digest}" if cleaned else f"k_{digest}"


def split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the basename, extension = the rest."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]


def group_by_key(members: Iterable[tuple[str, T]]) -> Iterator[tuple[str, list[tuple[str, T]]]]:
    """WebDataset's sample rule, the one loop that applies it: consecutive members whose names share a key
    (:func:`split_key`) form one sample. Yields ``(key, [(extension, payload), …])`` in archive order."""
    key: str | None = None
    group: list[tuple[str, T]] = []
    for name, payload in members:
        k, ext = split_key(name)
        if k != key:
            if key is not None:
                yield key, group
            key, group = k, []
        group.append((ext, payload))
    if key is not None:
        yield key, group
