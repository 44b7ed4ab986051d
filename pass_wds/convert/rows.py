"""The allowlist in memory: keys as one Arrow column, each row serialised once as JSON and spilled to disk.

Built by the readers of :mod:`.metadata`; joined with the listing (:meth:`Metadata.rows_of`), sized by the
planner (:meth:`Metadata.body_sizes`), digested for resume (:meth:`Metadata.digest`) and read back by offset
by the shard tasks (:meth:`Metadata.bodies`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pass_wds.convert.columns import contiguous, first_index


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
        first = first_index(keys)
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
