r"""Errors a user can fix, as one-line :class:`StorageError`\s that name the cause, the one classification of
a failed request into transient (retried) and permanent (:func:`classify`), and :func:`redact`, which removes
credentials and signed-URL parameters from every message pass-wds prints or writes."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pass_wds.errors import PassWdsError, first_line
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


class CacheFullError(StorageError):
    """The node-local cache's disk cannot hold a shard, even after evicting the cache's own entries."""

    fact: str = ""
    """The message without its advice (what a loader that streams instead says)."""


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


def _secret_values(storage_options: Mapping[str, Any] | None) -> list[str]:
    out = _option_secrets(storage_options)
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


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during (``__cause__``, ``__context__``), outermost
    first: backends wrap the cause that matters (a botocore ``ClientError`` inside s3fs's ``OSError``)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def client_error_code(exc: BaseException) -> tuple[str, int]:
    """``(error code, HTTP status)`` of a botocore ``ClientError`` (``("", 0)`` for anything else)."""
    resp = getattr(exc, "response", None)
    if isinstance(resp, Mapping):
        code = str(resp.get("Error", {}).get("Code", ""))
        status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return code, status
    return "", 0


def bucket_of(url: str) -> str:
    """The bucket of an object-store URL (``s3://bucket/key`` → ``bucket``)."""
    return url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""


def _endpoint(url: str, storage_options: Mapping[str, Any] | None) -> str:
    ep = endpoint(url, storage_options)
    if not ep:
        ep = "AWS S3" if _protocol(url) in ("s3", "s3a") else (url.split("/", 3)[2] if "://" in url else url)
    return redact(ep)


# ------------------------------------------------------------------------------------ what went wrong


class HttpStatusError(Exception):
    """An HTTP answer that is not the data: its status (and S3 error code, when the body names one)."""

    def __init__(self, status: int, code: str = "") -> None:
        super().__init__(f"HTTP {status}{f' {code}' if code else ''}")
        self.status, self.code = status, code


class ShortBodyError(Exception):
    """A response that ended before the bytes it announced (a cut connection)."""


_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded"}
_SERVER_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "503",
    "500",
}
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "403",
    "401",
}
_BROKEN_NAMES = {
    "ClientPayloadError",
    "ServerDisconnectedError",
    "ClientOSError",
    "ConnectionClosedError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "IncompleteRead",
    "ProtocolError",
    "HTTPClientError",
    "ResponseParserError",
}
_TIMEOUT_NAMES = {"ServerTimeoutError", "ReadTimeoutError", "ConnectTimeoutError", "FSTimeoutError"}
_CONNECT_NAMES = {"EndpointConnectionError", "ClientConnectorError", "ClientConnectionError"}
_CONNECT_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
_BROKEN_ERRNOS = {
    errno.ECONNRESET,
    errno.EPIPE,
    errno.ECONNABORTED,
    errno.EBUSY,
    errno.EREMOTEIO,
    errno.EAGAIN,
}


@dataclass(frozen=True)
class Cause:
    """One failed storage request, classified once for both questions that matter: retry it or not
    (:attr:`transient`), and what the final one-line error says (:attr:`kind`, :attr:`status`, :attr:`code`).

    Transient: connection refused or reset, timeouts, cut bodies, HTTP 5xx, 408, 429 and S3 throttling codes.
    Permanent: 404 / no such key or bucket, 401 / 403 / bad or missing credentials, an unknown host name, other
    4xx answers, and anything that is not about storage.
    """

    kind: str
    """not-found, no-bucket, permission, no-credentials, dns, connect, timeout, broken, server, throttled,
    other (a storage failure without a better name) or none (not a storage failure at all)."""
    transient: bool
    status: int = 0
    code: str = ""
    detail: str = ""


def classify(exc: BaseException) -> Cause:
    """What ``exc`` (from fsspec, s3fs, botocore, aiohttp or the OS) says about the storage request."""
    if isinstance(exc, StorageError):
        return Cause("storage", False, detail=first_line(exc))
    for e in error_chain(exc):  # an HTTP status or S3 code anywhere in the chain is the real answer
        code, status = client_error_code(e)
        if isinstance(e, HttpStatusError):
            code, status = e.code, e.status
        elif not status and type(e).__name__ == "ClientResponseError":
            status = int(getattr(e, "status", 0) or 0)
        if code or status:
            return _by_status(status, code, e)
    for e in error_chain(exc):
        name = type(e).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return Cause("no-credentials", False)
        if isinstance(e, socket.gaierror) or name == "ClientConnectorDNSError":
            # a name that does not exist will not exist in a minute either; a resolver that is down might
            gai = e if isinstance(e, socket.gaierror) else getattr(e, "os_error", None)
            permanent = getattr(gai, "errno", None) in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5))
            return Cause("dns", not permanent, detail=first_line(e))
        if (
            isinstance(e, ConnectionRefusedError)
            or name in _CONNECT_NAMES
            or isinstance(e, OSError)
            and e.errno in _CONNECT_ERRNOS
        ):
            return Cause("connect", True, detail=first_line(e))
        if isinstance(e, TimeoutError | asyncio.TimeoutError) or name in _TIMEOUT_NAMES:
            return Cause("timeout", True, detail=name)
        if isinstance(e, ShortBodyError | ConnectionError) or name in _BROKEN_NAMES:
            return Cause("broken", True, detail=f"{name}: {first_line(e)}" if str(e) else name)
        if isinstance(e, OSError) and e.errno in _BROKEN_ERRNOS:
            return Cause("broken", True, detail=first_line(e))
    if isinstance(exc, FileNotFoundError):
        return Cause("not-found", False)
    if isinstance(exc, PermissionError):
        return Cause("permission", False)
    if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in (
        "botocore",
        "aiohttp",
        "aiobotocore",
    ):
        return Cause("other", False, detail=first_line(exc))
    return Cause("none", False)


def _by_status(status: int, code: str, e: BaseException) -> Cause:
    if code == "NoSuchBucket" or "specified bucket does not exist" in str(e):
        return Cause("no-bucket", False, status, code)
    if code in ("NoSuchKey", "404", "NotFound") or status in (404, 410):
        return Cause("not-found", False, status, code)
    if code in _DENIED or status in (401, 403):
        return Cause("permission", False, status, code)
    if code in _THROTTLED or status == 429:
        return Cause("throttled", True, status, code)
    if code in _SERVER_CODES or status >= 500 or status == 408:
        return Cause("server", True, status, code)
    return Cause("other", False, status, code, detail=first_line(e))


def is_transient(exc: BaseException) -> bool:
    """Whether retrying could help (see :class:`Cause`)."""
    return classify(exc).transient


# ---------------------------------------------------------------------------------------- the one line


def credentials_source(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Where the credentials of a request to ``url`` come from, named without any secret (for "permission
    denied" lines: an expired presigned URL, the wrong profile and a missing key call for different fixes)."""
    so = storage_options or {}
    proto = _protocol(url)
    if proto in _HTTP:
        found = []
        if _USERINFO.search(url):
            found.append("user and password in the URL")
        if _SECRET_PARAM.search(url.split("?", 1)[1] if "?" in url else ""):
            found.append("the URL's signature (a presigned URL: expired, or signed for another object?)")
        headers = {**(so.get("headers") or {}), **((so.get("client_kwargs") or {}).get("headers") or {})}
        if headers:
            found.append(f"headers from storage_options ({', '.join(sorted(map(str, headers)))})")
        if "auth" in so or "auth" in (so.get("client_kwargs") or {}):
            found.append("auth from storage_options")
        return " and ".join(found) or "none (no userinfo, signature or headers)"
    if proto in ("s3", "s3a"):
        if so.get("anon"):
            return "none (anon=True in storage_options)"
        if so.get("key") or so.get("secret") or so.get("username"):
            return "key/secret from storage_options"
        if so.get("profile"):
            return f"profile {so['profile']!r} from storage_options"
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            return "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment"
        if os.environ.get("AWS_PROFILE"):
            return f"profile {os.environ['AWS_PROFILE']!r} (AWS_PROFILE)"
        return "the default AWS chain (shared credentials file, instance or container role)"
    return "the storage backend's default"


_GERUND = {
    "read": "reading",
    "open": "opening",
    "check": "checking",
    "list": "listing",
    "stat": "reading the size of",
    "create": "creating",
    "remove": "removing",
    "write": "writing",
}


def storage_error(
    exc: BaseException,
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    action: str = "access",
    *,
    tries: int = 0,
    seconds: float = 0.0,
    position: int | None = None,
    read_timeout: float | None = None,
) -> BaseException:
    """The one-line :class:`StorageError` for ``exc`` (credentials redacted) that names the cause: permission
    denied (and which credentials), not found, cannot connect, server error N, throttled, no answer, a broken
    connection. With ``tries`` (the transient failures of a retry that gave up) it says how many tries over how
    long, and at which byte a stream stopped. Exceptions that are not about storage are returned unchanged."""
    if isinstance(exc, StorageError):
        return exc
    cause = classify(exc)
    where = redact(url, storage_options)
    ep = _endpoint(url, storage_options)
    answer = f"HTTP {cause.status}" if cause.status else ""
    if cause.code and cause.code != str(cause.status):
        answer = f"{answer} {cause.code}".strip()
    hint = ""
    if cause.kind == "not-found":
        return StorageNotFoundError(f"not found: {where}")
    if cause.kind == "no-bucket":
        return StorageNotFoundError(f"bucket {bucket_of(url)!r} does not exist ({where})")
    if cause.kind == "permission":
        return StoragePermissionError(
            f"permission denied to {action} {where}{f' ({answer})' if answer else ''}; credentials: "
            f"{credentials_source(url, storage_options)}"
        )
    if cause.kind == "no-credentials":
        return StoragePermissionError(
            f"no credentials to {action} {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, "
            "or pass key/secret in --storage-options"
        )
    if cause.kind == "dns":
        what = f"cannot resolve the host of {ep}"
        hint = "; check the URL or endpoint"
        cls: type[StorageError] = StorageConnectionError
    elif cause.kind == "connect":
        what = f"cannot connect to {ep}"
        hint = (
            "; check the endpoint URL (AWS_ENDPOINT_URL or --storage-options client_kwargs.endpoint_url)"
            if _protocol(url) in ("s3", "s3a")
            else "; check the URL and that the server is up"
        )
        cls = StorageConnectionError
    elif cause.kind == "timeout":
        limit = f" for {read_timeout:g} s (read_timeout)" if read_timeout else ""
        what, cls = f"no answer from {ep}{limit}", StorageError
    elif cause.kind == "broken":
        what, cls = f"connection to {ep} broken ({redact(cause.detail, storage_options)})", StorageError
    elif cause.kind == "server" or cause.kind == "throttled" and cause.status >= 500:
        what, cls = f"server error {answer.removeprefix('HTTP ') or cause.code}", StorageError
    elif cause.kind == "throttled":
        what, cls = f"too many requests to {ep} ({answer})", StorageError
    elif cause.kind == "other":
        detail = redact(cause.detail or first_line(exc), storage_options) or type(exc).__name__
        if not tries:
            return StorageError(f"cannot {action} {where}: {detail}")
        what, cls = detail, StorageError
    else:
        return exc
    at = f" at byte {position}" if position is not None else ""
    if tries:
        plural = "try" if tries == 1 else "tries"
        gerund = _GERUND.get(action, f"trying to {action}")
        return cls(
            f"{what}: giving up {gerund} {where}{at} after {tries} failed {plural} over {seconds:.1f} s{hint}"
        )
    return cls(f"{what} to {action} {where}{at}{hint}")


def translate_error(
    exc: BaseException, url: str, storage_options: Mapping[str, Any] | None = None, action: str = "access"
) -> BaseException:
    """Map a backend exception to a one-line :class:`StorageError` (credentials redacted); exceptions that are
    not about storage (programming errors) are returned unchanged. See :func:`storage_error`."""
    return storage_error(exc, url, storage_options, action)


@contextlib.contextmanager
def guard(url: str, storage_options: Mapping[str, Any] | None, action: str) -> Iterator[None]:
    """Raise what goes wrong inside as its one-line :class:`StorageError` (:func:`translate_error`); errors
    that are not about storage pass unchanged."""
    try:
        yield
    except Exception as exc:
        translated = translate_error(exc, url, storage_options, action)
        if translated is exc:
            raise
        raise translated from None
