"""The errors pass-wds raises for problems a user can act on: one root, a few meaningful kinds.

Every such error is a :class:`PassWdsError` whose message is one line a user can act on (credentials and
signed-URL parameters redacted where the message is made). The CLI catches the root and prints that line
(exit code :attr:`PassWdsError.exit_code`); a library user can catch the root or one kind:

============================================  =========================================================
:class:`ConfigError`                          an option or argument is wrong (type, value, combination)
:class:`InputError`                           the data given is unusable: an input or the metadata
                                              allowlist is missing, unreadable or malformed
:class:`~pass_wds.storage.StorageError`       a storage location cannot be used (missing, refused,
                                              unreachable, not writable); subclasses for each cause
:class:`~pass_wds.format.errors.ShardError`   shards, their ``.idx`` or the manifest (``ManifestError``) of
                                              a dataset are unusable or refused (``SourceError``)
:class:`~pass_wds.decoding.DecodeError`       an image cannot be decoded (``reason`` in
                                              :mod:`pass_wds.format.reasons`); ``SampleError`` when the
                                              loader was told to raise on a bad sample
:class:`~pass_wds.convert.executors.EngineError`  the execution engine itself failed (exit code 1)
============================================  =========================================================

This module imports nothing of pass-wds, so every layer (``format/``, ``storage/``, the CLI) can build on it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PassWdsError(Exception):
    """Root of every error pass-wds raises for a problem a user can act on; ``str()`` is one line."""

    exit_code = 2
    """What the CLI exits with: 2 for a usage or data problem (the user's to fix)."""


class ConfigError(PassWdsError, ValueError):
    """An option or argument is invalid: the message names the option and the problem in one line."""


class InputError(PassWdsError, ValueError):
    """An input or the metadata allowlist is missing, unreadable or malformed: the message names the file
    and, where there is one, the line."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, else its type name: how a foreign exception (a
    decoder's, a parser's, fsspec's) is quoted inside a one-line error."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest candidate to a misspelt name (``--metdata``, ``simclrr``), or
    nothing when none is close: a typo should cost one rerun, not a search through ``--help``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""
