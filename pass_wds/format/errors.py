"""The format's one error type."""

from __future__ import annotations

from typing import Any

from pass_wds.errors import PassWdsError
from pass_wds.storage.errors import redact


class ShardError(PassWdsError, ValueError):
    """A shard, its index, the shard list or the manifest of a dataset is unusable or refused; the message
    names the file and the problem.

    The message is redacted when the error is made (shard URLs may carry a password or a signature), so no
    caller can forget to."""

    def __init__(self, message: Any = "", *args: Any) -> None:
        super().__init__(redact(str(message)), *args)
