"""Tar members: the ustar headers pass-wds writes and the one header parser that every reader uses.

Shards are plain ustar with fixed fields (same inputs, same bytes, on any machine at any time). The parser
(:func:`scan_tar`) is shared by the lister of raw archives and the loader's scan of foreign shards; it reads
ustar, GNU long names and base-256 numbers, and pax headers.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

BLOCK = 512
END_OF_ARCHIVE = 2 * BLOCK

# Fixed header fields: the same inputs give byte-identical archives on any machine, at any time.
MTIME = 1_609_459_200  # 2021-01-01T00:00:00Z, the PASS release year
MODE = 0o644


def padded(size: int) -> int:
    """Bytes a member's data occupies in a tar (rounded up to whole 512-byte blocks)."""
    return -(-size // BLOCK) * BLOCK


def member_bytes(size: int) -> int:
    """True tar footprint of one member: its ustar header plus padded data."""
    return BLOCK + padded(size)


def sample_bytes(image_size: int, json_size: int) -> int:
    return member_bytes(image_size) + member_bytes(json_size)


def _octal(value: int, width: int) -> bytes:
    """A ustar numeric field: zero-padded octal digits and a NUL, as GNU tar and Python's tarfile write them."""
    return b"%0*o\0" % (width - 1, value)


# Everything of a member header but its name, size and checksum is the same for every member.
_MODE, _IDS, _MTIME = _octal(MODE, 8), _octal(0, 8), _octal(MTIME, 12)
_TAIL = (
    tarfile.REGTYPE + b"\0" * 100 + tarfile.POSIX_MAGIC + b"\0" * (64 + 16 + 155)
)  # names, dev numbers, prefix
MAX_SIZE = 8**11 - 1  # what an 11-digit octal size field holds (8 GiB): far above any image


def tar_header(name: str, size: int) -> bytes:
    """One ustar member header (fixed mtime, uid/gid 0, mode 0644); byte-identical to tarfile's USTAR output.

    Written by hand because tarfile's generic TarInfo.tobuf costs ~100 µs a member, a large share of a
    lossless repack that otherwise only moves bytes.
    """
    raw = name.encode("ascii")
    if len(raw) > 100:
        raise ValueError(f"member name longer than 100 bytes: {name!r}")
    if not 0 <= size <= MAX_SIZE:
        raise ValueError(f"member too large for a ustar header: {size} bytes")
    head = raw.ljust(100, b"\0") + _MODE + _IDS + _IDS + _octal(size, 12) + _MTIME
    block = head + b" " * 8 + _TAIL
    checksum = b"%06o\0 " % sum(block)
    return (head + checksum + _TAIL).ljust(BLOCK, b"\0")


_TAR_CHUNK = 8 << 20  # listing reads archives sequentially in blocks this large
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")  # regular file, old regular file, contiguous file (tarfile's REGULAR_TYPES)
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, directories, fifos: data is never skipped
_TYPE_NAMES = {
    b"1": "hard link",
    b"2": "symlink",
    b"3": "character device",
    b"4": "block device",
    b"5": "directory",
    b"6": "fifo",
    b"S": "sparse file",
}


class TarDamaged(Exception):
    """The archive is unreadable from this point on (what was listed before it stays valid)."""


@dataclass(frozen=True, slots=True)
class TarEntry:
    """One member header: its name, type flag, where its data starts and how long it is."""

    name: str
    type: bytes
    offset_data: int
    size: int
    sparse: bool = False

    @property
    def isreg(self) -> bool:
        return self.type in _REGULAR and not self.sparse

    def kind(self) -> str:
        if self.sparse:
            return "sparse file (stored bytes are not the file's contents)"
        return _TYPE_NAMES.get(self.type, f"type {self.type!r}")


_OCTAL = re.compile(rb"[0-7]+")
MAX_EXTENDED_HEADER = 1 << 20  # a GNU long name or pax header claiming more is damage, not a name
_MAX_MEMBER = 1 << 48  # 256 TiB: larger sizes are lies (and would overflow seeks), whatever the encoding


def _tar_number(field: bytes) -> int:
    """A numeric header field: NUL/space-terminated octal, or GNU base-256 (first byte 0x80).

    Strict on purpose: signs, underscores, non-octal digits and negative base-256 numbers (first byte 0xff)
    raise ``ValueError``, because a negative size would send the read offset backwards onto the same header.
    """
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise ValueError("negative number")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not _OCTAL.fullmatch(text):
        raise ValueError(f"not an octal number: {text[:16]!r}")
    return int(text, 8)


def header_size(header: bytes) -> int:
    """The size field of one 512-byte member header (octal or GNU base-256); ``ValueError`` if unreadable."""
    return _tar_number(header[124:136])


def _tar_name(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<length> <key>=<value>\\n"`` records of a pax extended header; ``ValueError`` when one lies.

    The length counts the whole record, its own digits and the newline included, so it must end inside the
    header, right on a newline: anything else means the rest cannot be trusted.
    """
    out: dict[str, str] = {}
    pos, n = 0, len(data)
    while pos < n and data[pos] != 0:
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise ValueError(f"bad pax record length at byte {pos}")
        end = pos + int(digits)
        if end <= space + 1 or end > n or data[end - 1] != 0x0A:
            raise ValueError(f"pax record length at byte {pos} does not match its record")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise ValueError(f"pax record at byte {pos} has no key=value")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return out


def _pax_size(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 15:
        raise ValueError(f"bad pax size {value[:20]!r}")
    return int(value)


class TarScanner:
    """Walks the member headers of an uncompressed tar read from ``f``; :meth:`data` reads a member's bytes.

    The archive is read in large sequential blocks rather than one 512-byte read per header: on a cold disk
    or an object store, per-header reads cost a seek or a request each (PASS: 144k per archive), while
    sequential blocks run at the device's streaming rate and leave the images in the page cache for the
    writers. Members larger than a block are skipped by seeking, or by reading forward when ``f`` cannot
    seek (a gzip or HTTP stream): positions only ever move forward. ``total`` (the archive's size, when
    known) lets a member cut off by the end of the file be caught before its data is skipped. Understands
    ustar, GNU long names and pax headers. Iteration raises :class:`TarDamaged` where the archive stops
    making sense (bad checksum, a header or a member's data cut off by the end of the file); everything
    yielded before that is sound.
    """

    def __init__(self, f: IO[bytes], total: int | None = None, chunk: int = _TAR_CHUNK) -> None:
        self._f = f
        self._total = total
        self._chunk = chunk
        self._seekable = f.seekable()
        self._block = bytearray(chunk)  # reused: a fresh 8 MB buffer per read costs more in page faults
        self._view = memoryview(self._block)
        self._filled, self._base = 0, 0
        self._stream_pos = 0  # where ``f`` is now (forward-only streams)

    def _goto(self, pos: int) -> None:
        if self._seekable:
            self._f.seek(pos)
            return
        while self._stream_pos < pos:
            skipped = len(self._f.read(min(pos - self._stream_pos, self._chunk)))
            if not skipped:
                return
            self._stream_pos += skipped

    def read(self, pos: int, n: int) -> bytes:
        """``n`` bytes at ``pos`` (fewer at the end of the file); ``pos`` never goes back before the buffer."""
        base, filled = self._base, self._filled
        if base <= pos and pos + n <= base + filled:
            return bytes(self._view[pos - base : pos - base + n])
        self._goto(pos)
        if n > self._chunk:
            data = self._f.read(n)
            self._stream_pos = pos + len(data)
            return data
        filled = self._f.readinto(self._view) or 0  # type: ignore[attr-defined]
        self._filled, self._base, self._stream_pos = filled, pos, pos + filled
        return bytes(self._view[: min(n, filled)])

    def data(self, entry: TarEntry) -> bytes:
        """The bytes of the member last yielded (call before iterating further)."""
        out = self.read(entry.offset_data, entry.size)
        if len(out) < entry.size:
            raise TarDamaged(f"member {entry.name!r} cut off at byte {entry.offset_data + len(out)}")
        return out

    def __iter__(self) -> Iterator[TarEntry]:
        read, total = self.read, self._total
        pos = 0
        long_name: str | None = None
        pax: dict[str, str] = {}
        global_pax: dict[str, str] = {}
        while True:
            hdr = read(pos, BLOCK)
            if len(hdr) < BLOCK:
                if not hdr and pos > 0:  # no end-of-archive blocks: tolerated, as every tar reader does
                    return
                raise TarDamaged("empty file" if pos == 0 else f"header cut off at byte {pos}")
            if hdr == _ZERO_BLOCK:
                return
            try:
                stored = _tar_number(hdr[148:156])
                unsigned = 256 + sum(hdr) - sum(hdr[148:156])
                if stored != unsigned:
                    signed = unsigned - 256 * sum(1 for b in hdr[:148] + hdr[156:] if b >= 128)
                    if stored != signed:
                        raise ValueError("bad checksum")
                size = _tar_number(hdr[124:136])
                if size > _MAX_MEMBER:
                    raise ValueError(f"size {size} is not plausible")
            except ValueError as e:
                raise TarDamaged(f"bad header at byte {pos}: {e}") from None
            type_ = hdr[156:157]
            data = pos + BLOCK
            if type_ in (b"L", b"K", b"x", b"g"):  # headers that describe the next member
                if size > MAX_EXTENDED_HEADER:
                    raise TarDamaged(f"extended header at byte {pos} claims {size} bytes (at most 1 MiB)")
                body = read(data, size)
                if len(body) < size:
                    raise TarDamaged(f"extended header cut off at byte {pos}")
                if type_ == b"L":
                    long_name = _tar_name(body)
                elif type_ in (b"x", b"g"):
                    try:
                        records = _pax_records(body)
                    except ValueError as e:
                        raise TarDamaged(f"bad pax header at byte {pos}: {e}") from None
                    (pax if type_ == b"x" else global_pax).update(records)
                pos = data + padded(size)
                continue
            attrs = {k: v for k, v in (global_pax | pax).items() if v}  # an empty value unsets a keyword
            if long_name is not None:
                name = long_name
            elif "path" in attrs:
                name = attrs["path"]
            else:
                name = _tar_name(hdr[:100])
                if hdr[257:263] == b"ustar\0" and hdr[345] != 0:  # POSIX ustar splits long names in two
                    name = _tar_name(hdr[345:500]) + "/" + name
            if "size" in attrs:
                try:
                    size = _pax_size(attrs["size"])
                except ValueError as e:
                    raise TarDamaged(f"bad pax header before byte {pos}: {e}") from None
            if not name or "\0" in name:
                raise TarDamaged(f"member at byte {pos} has an empty name or one with a NUL byte")
            sparse = type_ == b"S" or any(k.startswith("GNU.sparse") for k in attrs)
            if type_ == b"\0" and name.endswith("/"):  # old (V7) tars mark directories by the trailing slash
                type_ = b"5"
            if type_ == b"5":
                name = name.rstrip("/") or name
            entry = TarEntry(name, type_, data, size, sparse)
            long_name, pax = None, {}
            if type_ in _NO_DATA:
                yield entry
                pos = data
                continue
            if (total is not None and data + size > total) or (
                total is None and size and len(read(data + size - 1, 1)) < 1
            ):
                raise TarDamaged(
                    f"member {name!r} cut off: {size} bytes at byte {data}"
                    + (f", archive is {total} bytes" if total is not None else "")
                )
            yield entry
            pos = data + padded(size)


def scan_tar(f: IO[bytes], total: int | None = None, chunk: int = _TAR_CHUNK) -> Iterator[TarEntry]:
    """The member headers of the tar in ``f`` (see :class:`TarScanner`)."""
    return iter(TarScanner(f, total, chunk))
