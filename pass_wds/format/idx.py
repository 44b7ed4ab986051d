"""DALI ``.idx`` files (v1.2), written beside every shard and parsed by the loader, ``verify`` and ``inspect``:
one line per sample naming each member's extension, data offset, size and name."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from pass_wds.format.errors import ShardError
from pass_wds.format.keys import group_by_key, split_key
from pass_wds.storage.errors import redact
from pass_wds.storage.urls import has_query, without_query

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class Member(NamedTuple):
    """One tar member of a sample: extension (``jpg``, ``json`` …), data offset and size in bytes."""

    ext: str
    offset: int
    size: int


@dataclass
class ShardIndex:
    """Per-sample layout of one shard: key and members (offsets are into the uncompressed tar)."""

    keys: list[str]
    members: list[tuple[Member, ...]]

    def __len__(self) -> int:
        return len(self.keys)

    _sizes: np.ndarray | None = field(default=None, repr=False, compare=False)
    named: bool = True
    """Keys come from member names (an ``.idx`` without names numbers its samples instead)."""

    def digest(self) -> str:
        """A digest of the layout (keys, member extensions, offsets and sizes): two shards with other images
        almost always differ here even when their names and counts agree."""
        h = hashlib.sha256()
        for key, ms in zip(self.keys, self.members, strict=True):
            h.update(key.encode("utf-8", "surrogateescape"))
            for m in ms:
                h.update(f"\0{m.ext} {m.offset} {m.size}".encode("utf-8", "surrogateescape"))
            h.update(b"\n")
        return h.hexdigest()[:32]

    def sample_bytes(self) -> np.ndarray:
        """Total data bytes per sample (what a shuffle buffer holds for it); computed once."""
        if self._sizes is None:
            self._sizes = np.fromiter(
                (sum(m.size for m in ms) for ms in self.members), dtype=np.int64, count=len(self)
            )
        return self._sizes


def group_samples(entries: Iterable[tuple[str, int, int]]) -> ShardIndex:
    """Group ``(member name, data offset, size)`` runs sharing a key into samples, in tar order."""
    keys: list[str] = []
    members: list[tuple[Member, ...]] = []
    for key, group in group_by_key((name, (offset, size)) for name, offset, size in entries):
        keys.append(key)
        members.append(tuple(Member(ext, offset, size) for ext, (offset, size) in group))
    return ShardIndex(keys, members)


def parse_idx(text: str, source: str = "<idx>") -> ShardIndex:
    """Parse a DALI ``.idx`` v1.2 file: ``v1.2 N`` then per sample ``ext offset size [name]`` groups.

    Errors describe a bad line but never quote it: a hostile manifest may point ``idx`` at any file.
    """
    source = redact(source)
    lines = text.splitlines()
    if not lines:
        raise ShardError(f"{source}: empty index file")
    head = lines[0].split()
    if len(head) != 2 or head[0] != "v1.2" or not head[1].isdigit():
        raise ShardError(f"{source}: not a DALI v1.2 index (the first line is not 'v1.2 <count>')")
    n = int(head[1])
    body = [ln for ln in lines[1:] if ln.strip()]
    if len(body) != n:
        raise ShardError(f"{source}: header says {n} samples but {len(body)} sample lines follow")
    keys: list[str] = []
    members: list[tuple[Member, ...]] = []
    all_named = True
    for i, line in enumerate(body):
        tok = line.split()
        n_tok = len(tok)
        # Groups of 4 (ext offset size name) or of 3 (ext offset size): in 4-groups token 4 is an extension.
        width = 3 if n_tok % 4 else 4 if n_tok % 3 or not tok[4].isdigit() else 3
        if not tok or n_tok % width:
            raise ShardError(
                f"{source}: sample line {i + 2} is malformed ({n_tok} fields, not groups of 3 or 4)"
            )
        try:
            ms = tuple([Member(tok[j], int(tok[j + 1]), int(tok[j + 2])) for j in range(0, n_tok, width)])
        except ValueError:
            raise ShardError(f"{source}: sample line {i + 2} has a non-integer offset/size") from None
        keys.append(split_key(tok[3])[0] if width == 4 else f"{i:09d}")
        all_named = all_named and width == 4
        members.append(ms)
    return ShardIndex(keys, members, named=all_named)


def idx_line(members: Iterable[tuple[str, int, int]]) -> str:
    """One sample's line of a DALI v1.2 index, from its members' ``(name, data offset, size)`` in tar order:
    ``<ext> <offset> <size> <name>`` per member, the extension being what follows the key (as
    :func:`parse_idx` and every WebDataset reader split it)."""
    return " ".join(f"{split_key(name)[1]} {offset} {size} {name}" for name, offset, size in members)


def idx_text(lines: list[str]) -> bytes:
    """DALI webdataset index v1.2: a header with the sample count, then one line per sample (:func:`idx_line`)."""
    return (f"v1.2 {len(lines)}\n" + "".join(line + "\n" for line in lines)).encode("ascii")


def idx_url_for(url: str) -> str | None:
    """The ``.idx`` beside a shard, or None for a signed URL (its signature covers the shard alone, so no
    other object's URL can be derived from it)."""
    if has_query(url):
        return None
    for suffix in _TAR_SUFFIXES:
        if url.endswith(suffix):
            return url[: -len(suffix)] + ".idx"
    return url + ".idx"


def is_gzip_name(url: str) -> bool:
    return without_query(url).endswith((".tgz", ".gz"))
