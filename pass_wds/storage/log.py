"""Logging for pass-wds modules: every line goes through :func:`~pass_wds.storage.errors.redact`, so no
logged URL can carry userinfo, a signed-URL parameter or a secret from the AWS environment. Secrets from
``storage_options`` are not known here (no process-wide registry): whoever formats a message with a storage
option at hand redacts it with those options, as the storage layer does."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pass_wds.storage.errors import redact


class _RedactingFilter(logging.Filter):
    """Passes every record through :func:`redact` (its arguments may hold URLs), with the secret values of
    ``storage_options`` when it was given them."""

    def __init__(self, storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.storage_options = storage_options

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.storage_options)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = _RedactingFilter()


def redacting_filter(storage_options: Mapping[str, Any] | None) -> logging.Filter:
    """A filter for a handler that also removes the secret values of these ``storage_options`` (the CLI puts
    one on its stderr handler for the options it was given; forked workers inherit it)."""
    return _RedactingFilter(storage_options)


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger`` for pass-wds modules: no line they log can carry a credential."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


__all__ = ["get_logger", "redacting_filter"]
