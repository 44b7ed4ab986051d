"""Why an input or a sample was refused: one vocabulary, and the ``errors.jsonl`` record.

The same words name a rejection in ``errors.jsonl`` (make-shards), a :class:`~pass_wds.decoding.DecodeError`'s
``reason`` (the decoder) and a bad sample in ``loader.stats.bad`` (the loader), so one list of reasons serves
a user reading any of them, and other tools can rely on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pass_wds.format.keys import is_utf8

# an image that cannot be used (make-shards, the decoder, the loader)
CORRUPT = "corrupt"
EMPTY = "empty"
NOT_AN_IMAGE = "not-an-image"
BOMB = "decompression-bomb"
TRUNCATED = "truncated"  # the decoder's finer word for corrupt data that ends early
UNSUPPORTED_FORMAT = "unsupported-format"
# an input make-shards refuses before reading its image
MISSING_METADATA = "missing-metadata"
DUPLICATE_KEY = "duplicate-key"
NOT_REGULAR = "not-a-regular-file"
UNSAFE_PATH = "unsafe-path"
READ_ERROR = "read-error"
# a sample the loader counts
CHECKSUM_MISMATCH = "checksum-mismatch"  # image bytes differ from the crc32 make-shards recorded
BAD_JSON = "bad-json"  # the sample's JSON member does not parse
NO_IMAGE = "no-image"  # the sample has no member the loader decodes as an image
FAILED = "failed"  # anything else (an augmentation that raised): the detail names the exception

REASONS = frozenset(
    {
        CORRUPT,
        EMPTY,
        NOT_AN_IMAGE,
        BOMB,
        TRUNCATED,
        UNSUPPORTED_FORMAT,
        MISSING_METADATA,
        DUPLICATE_KEY,
        NOT_REGULAR,
        UNSAFE_PATH,
        READ_ERROR,
        CHECKSUM_MISMATCH,
        BAD_JSON,
        NO_IMAGE,
        FAILED,
    }
)


def reason_of(exc: BaseException) -> str:
    """The vocabulary word for an exception that made a sample unusable: its own ``reason`` when it carries
    one of these words (``DecodeError``, ``CorruptSample``), else :data:`FAILED`."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) and reason in REASONS else FAILED


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused input of make-shards: a line of ``errors.jsonl``."""

    key: str
    source: str
    member: str
    reason: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        """The ``errors.jsonl`` record; names that are not UTF-8 are shown with ``\\xNN`` escapes (a rejected
        archive member may carry any bytes, and the file must stay valid UTF-8 JSON)."""
        return {
            "key": printable(self.key),
            "source": printable(self.source),
            "member": printable(self.member),
            "reason": self.reason,
            "detail": printable(self.detail),
        }


def printable(text: str) -> str:
    """``text`` with the surrogate escapes of undecodable bytes turned into visible ``\\xNN`` sequences."""
    if is_utf8(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
