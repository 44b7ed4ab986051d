r"""Errors a user can fix, as one-line :class:`StorageError`\s, and :func:`redact`, which removes credentials
and signed-URL parameters from every message pass-wds prints or writes."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pass_wds.errors import PassWdsError
from pass_wds.errors import first_line as _first_line
from pass_wds.storage.urls import HTTP as _HTTP
from pass_wds.storage.urls import endpoint
from pass_wds.storage.urls import protocol as _protocol


class StorageError(PassWdsError, RuntimeError):
    """A storage location cannot be used (missing, unreadable, not writable); the message is one line."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The object, folder or bucket does not exist (also a ``FileNotFoundError``)."""


class StoragePermissionError(StorageError, PermissionError):
    """Credentials are missing or do not allow the operation (also a ``PermissionError``)."""


class StorageConnectionError(StorageError, ConnectionError):
    """The endpoint cannot be reached (wrong endpoint URL, server down, DNS failure)."""


class ReadOnlyError(StorageError):
    """The location cannot be written (``http(s)://``)."""


_SECRET_PARAM = re.compile(
    r"(?i)\b(x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig|credential|awsaccesskeyid|"
    r"access_token|id_token|token|api[_-]?key|secret|password|policy|key-pair-id)=([^&\s,'\"<>]+)"
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_SECRET_OPTION = re.compile(
    r"(?i)(secret|token|password|passwd|credential|^key$|access_key|api[_-]?key|sas|auth|cookie|signature)"
)
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECURITY_TOKEN")


_REMEMBERED: set[str] = set()


def remember_secrets(storage_options: Mapping[str, Any] | None) -> None:
    """Redact the secret values of these storage options from every later message and log line of this
    process (and of worker processes forked from it), also where the options are not at hand."""
    _REMEMBERED.update(_option_secrets(storage_options))


def _secret_values(storage_options: Mapping[str, Any] | None) -> list[str]:
    out = _option_secrets(storage_options) + list(_REMEMBERED)
    out += [v for k in _SECRET_ENV if len(v := os.environ.get(k, "")) >= 4]
    return sorted(set(out), key=len, reverse=True)


def _option_secrets(storage_options: Mapping[str, Any] | None) -> list[str]:
    out: list[str] = []

    def walk(obj: Any, secret: bool) -> None:
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(v, secret or bool(_SECRET_OPTION.search(str(k))))
        elif isinstance(obj, list | tuple):
            for v in obj:
                walk(v, secret)
        elif secret and isinstance(obj, str) and len(obj) >= 4:
            out.append(obj)

    walk(storage_options or {}, False)
    return out


def redact(text: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Remove credentials from a URL or message: userinfo, signed-URL query parameters, and secret values
    from ``storage_options`` and the AWS environment."""
    text = _USERINFO.sub(r"\1***@", str(text))
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} ***", text)
    for value in _secret_values(storage_options):
        text = text.replace(value, "***")
    return text


class _RedactingFilter(logging.Filter):
    """Passes every record of a pass-wds logger through :func:`redact` (its arguments may hold URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = _RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger`` for pass-wds modules: no line they log can carry a credential."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _client_error_code(exc: BaseException) -> tuple[str, int]:
    resp = getattr(exc, "response", None)
    if isinstance(resp, Mapping):
        code = str(resp.get("Error", {}).get("Code", ""))
        status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return code, status
    return "", 0


def _endpoint(url: str, storage_options: Mapping[str, Any] | None) -> str:
    ep = endpoint(url, storage_options)
    if not ep:
        ep = "AWS S3" if _protocol(url) in ("s3", "s3a") else (url.split("/", 3)[2] if "://" in url else url)
    return redact(ep)


def _bucket(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""


def translate_error(
    exc: BaseException, url: str, storage_options: Mapping[str, Any] | None = None, action: str = "access"
) -> BaseException:
    """Map a backend exception to a one-line :class:`StorageError` (credentials redacted).

    Exceptions that are not about storage (programming errors) are returned unchanged.
    """
    if isinstance(exc, StorageError):
        return exc
    where = redact(url, storage_options)
    proto = _protocol(url)
    for e in _chain(exc):
        code, status = _client_error_code(e)
        name = type(e).__name__
        text = str(e)
        if code == "NoSuchBucket" or "specified bucket does not exist" in text:
            return StorageNotFoundError(f"bucket {_bucket(url)!r} does not exist ({where})")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "403") or (
            status in (401, 403)
        ):
            return StoragePermissionError(
                f"permission denied to {action} {where} ({code or status}); check credentials"
            )
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return StoragePermissionError(
                f"no credentials to {action} {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, "
                "or pass key/secret in --storage-options"
            )
        if name in ("EndpointConnectionError", "ClientConnectorError", "ConnectTimeoutError") or isinstance(
            e, ConnectionRefusedError
        ):
            return StorageConnectionError(
                f"cannot connect to {_endpoint(url, storage_options)} to {action} {where}; "
                "check the endpoint URL (AWS_ENDPOINT_URL or --storage-options client_kwargs.endpoint_url)"
            )
        if name == "ClientResponseError" and getattr(e, "status", 0) in (401, 403):
            return StoragePermissionError(f"permission denied to {action} {where} (HTTP {e.status})")  # type: ignore[attr-defined]
        if name == "ClientResponseError" and getattr(e, "status", 0) == 404 or code in ("NoSuchKey", "404"):
            return StorageNotFoundError(f"not found: {where}")
    if isinstance(exc, FileNotFoundError):
        return StorageNotFoundError(f"not found: {where}")
    if isinstance(exc, PermissionError):
        return StoragePermissionError(f"permission denied to {action} {where}")
    if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in (
        "botocore",
        "aiohttp",
        "aiobotocore",
    ):
        detail = redact(_first_line(exc), storage_options)
        if proto in _HTTP and not detail:
            detail = type(exc).__name__
        return StorageError(f"cannot {action} {where}: {detail}")
    return exc


@contextlib.contextmanager
def _guard(url: str, storage_options: Mapping[str, Any] | None, action: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        translated = translate_error(exc, url, storage_options, action)
        if translated is exc:
            raise
        raise translated from None
