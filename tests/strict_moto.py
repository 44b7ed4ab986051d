"""moto's S3 server, plus the one check real S3 makes that moto's development server does not.

Real S3 refuses an upload whose body ends early (``IncompleteBody``) or whose payload does not match the
checksum the client declared (``BadDigest``): a connection cut mid-upload never leaves an object behind. moto's
server can store a damaged body under the declared checksum (seen once in CI: a shard read back empty, its
stored CRC32 that of the full shard), so a fault test that cuts connections could see an object no real store
would keep. This wrapper refuses such requests the way S3 does; everything else is moto, unchanged.

Usage: ``python tests/strict_moto.py -H 127.0.0.1 -p PORT`` (what ``servers.MotoServer`` runs).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

BAD_DIGEST = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>BadDigest</Code><Message>The CRC32 you specified did '
    b"not match the calculated checksum.</Message></Error>"
)
INCOMPLETE = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>IncompleteBody</Code><Message>You did not provide '
    b"the number of bytes specified by the Content-Length HTTP header</Message></Error>"
)


class CompleteBodies:
    """WSGI middleware: an upload whose body is cut short, or whose payload does not match the CRC32 checksum
    the client declared (header or aws-chunked trailer), is refused before moto sees it, as S3 refuses it."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("PUT", "POST"):
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        try:
            body = _read_all(environ["wsgi.input"], int(length) if length.isdigit() else None)
            if length.isdigit() and len(body) < int(length):
                raise ValueError("short body")
            payload, trailers = _decode(body, environ)
        except (OSError, ValueError):
            return _refuse(start_response, INCOMPLETE)
        declared = environ.get("HTTP_X_AMZ_CHECKSUM_CRC32") or trailers.get("x-amz-checksum-crc32")
        if declared and declared != base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode():
            return _refuse(start_response, BAD_DIGEST)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def _read_all(stream: Any, length: int | None) -> bytes:
    chunks, got = [], 0
    while length is None or got < length:
        chunk = stream.read(1 << 20 if length is None else min(length - got, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _decode(body: bytes, environ: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The payload of an ``aws-chunked`` body and its trailers (a plain body is its own payload)."""
    if "aws-chunked" not in environ.get("HTTP_CONTENT_ENCODING", ""):
        return body, {}
    out, pos = [], 0
    while True:
        end = body.index(b"\r\n", pos)  # ValueError when cut
        size = int(body[pos:end].split(b";", 1)[0], 16)
        pos = end + 2
        if size == 0:
            break
        if pos + size + 2 > len(body):
            raise ValueError("chunk cut off")
        out.append(body[pos : pos + size])
        pos += size + 2
    trailers = {}
    for line in body[pos:].split(b"\r\n"):
        if b":" in line:
            k, v = line.split(b":", 1)
            trailers[k.strip().lower().decode()] = v.strip().decode()
    payload = b"".join(out)
    decoded = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH")
    if decoded and decoded.isdigit() and int(decoded) != len(payload):
        raise ValueError("decoded length differs")
    return payload, trailers


def _refuse(start_response: Callable[..., Any], error: bytes) -> Iterable[bytes]:
    start_response("400 Bad Request", [("Content-Type", "application/xml"), ("Connection", "close")])
    return [error]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--parent", type=int, help="end when this process (the test run) is gone")
    args = parser.parse_args()
    if args.parent:  # a killed pytest must not leave a server behind
        from pass_wds.lifeline import die_with_parent

        die_with_parent(args.parent)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, CompleteBodies(app), threaded=True)


if __name__ == "__main__":
    main()
