"""Arrow column helpers shared by the listing (:mod:`.inputs`) and the allowlist (:mod:`.metadata`): keys
are one string column each, never 14M Python strings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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


def first_index(keys: pa.Array) -> np.ndarray:
    """For every key, the index of its first occurrence (itself unless it is a duplicate): one hash pass."""
    if not len(keys):
        return np.zeros(0, np.int32)
    return pc.index_in(keys, value_set=keys).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]
