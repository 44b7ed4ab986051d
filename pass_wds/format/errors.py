"""The format's one error type."""

from __future__ import annotations


class ShardError(ValueError):
    """A shard, its index or the shard list is unusable; the message names the file and the problem."""
