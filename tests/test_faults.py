"""Storage faults during training (issue 19 items 1-2), against real loopback servers: moto S3 and a range-capable
HTTP server behind the fault proxy, a port nothing listens on, a server that accepts and never answers.

Transient failures (refused, reset, stalled, 5xx, SlowDown) are retried within ``retry_seconds`` (mid-epoch
too, every sample still exactly once); an outage longer than the budget fails within the budget plus one
``read_timeout``; permanent failures (403, 404) fail at once; every error names its cause in one line, in the
loader and in the CLI, for S3 and HTTP, presigned and userinfo URLs included. Budgets are small to keep this
file quick; the defaults (120 s, 30 s) are the same code with larger numbers.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import Bucket, FaultProxy, HttpServer, TcpRelay, free_port
from shardkit import all_keys, write_shards

from pass_wds import storage
from pass_wds.loading import make_loader

COUNTS = [20, 20, 20, 20]
PASSWORD = "hunter2-PASSWORD"
SIG = "deadbeefSIGNATURE"
PRESIGN = f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature={SIG}"
PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]


def _blob(shard: int, i: int) -> bytes:
    """Undecoded bytes (recipe=None never decodes them), large enough that a shard takes several reads."""
    return random.Random(shard * 1000 + i).randbytes(40_000)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "d"
    write_shards(root, COUNTS, image=_blob)
    return root


def _served(server: HttpServer, data: Path) -> str:
    dest = server.root / "d"
    dest.mkdir()
    for f in data.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return f"{server.url}/d"


def _uploaded(s3: Bucket, data: Path) -> str:
    for f in sorted(data.iterdir()):
        s3.put(f"d/{f.name}", f.read_bytes())
    return f"{s3.url}/d"


def _through(proxy: FaultProxy, s3: Bucket) -> dict[str, Any]:
    return {**s3.storage_options, "client_kwargs": {"endpoint_url": proxy.url, "region_name": "us-east-1"}}


def _keys(loader: Any) -> Counter[str]:
    return Counter(k for batch in loader for k in batch["__key__"])


def _one_line(text: str) -> str:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text


# ------------------------------------------------------------------------------------- transient: retried


def test_503_on_the_very_first_request_is_retried_http(
    data: Path, http_server: HttpServer, fault_proxy: Any
) -> None:
    """Before: the existence check of index.json took a 503 for "not found; expected an output folder"."""
    _served(http_server, data)
    proxy: FaultProxy = fault_proxy(http_server.url)
    proxy.fail_first(3, status=503)
    loader = make_loader(
        f"{proxy.url}/d/index.json", batch_size=5, num_workers=0, recipe=None, retry_seconds=20
    )
    assert _keys(loader) == Counter(all_keys(COUNTS))
    assert not proxy._fail and proxy.gets()[0][0] == "/d/index.json"  # the faults hit the first request


def test_503_on_the_very_first_request_is_retried_s3(data: Path, s3: Bucket, fault_proxy: Any) -> None:
    """Six 503s: more than botocore's own five attempts, so only pass-wds's retry can ride them out."""
    url = _uploaded(s3, data)
    proxy: FaultProxy = fault_proxy(s3.server.endpoint)
    proxy.fail_first(6, status=503)
    loader = make_loader(
        f"{url}/index.json", batch_size=5, num_workers=0, recipe=None, storage_options=_through(proxy, s3),
        retry_seconds=30,
    )  # fmt: skip
    assert _keys(loader) == Counter(all_keys(COUNTS))
    assert not proxy._fail


def test_a_30_second_outage_mid_epoch_is_survived_with_every_sample_once(
    data: Path, s3: Bucket, tcp_relay: Any
) -> None:
    """The S3 endpoint refuses every connection for 30 s in the middle of an epoch read by two workers
    (before: an outage of 6-7 s ended the run when a new byte range met a refused connection)."""
    url = _uploaded(s3, data)
    relay: TcpRelay = tcp_relay(s3.server.endpoint)
    so = {**s3.storage_options, "client_kwargs": {"endpoint_url": relay.url, "region_name": "us-east-1"}}
    loader = make_loader(
        f"{url}/index.json", batch_size=4, num_workers=2, recipe=None, storage_options=so,
        retry_seconds=60, read_timeout=10, prefetch_factor=1, segment_samples=5,
    )  # fmt: skip
    got: Counter[str] = Counter()
    restarted: list[float] = []
    give_up = threading.Event()

    def restart() -> None:
        if not give_up.wait(30):  # a failed test must not start a relay after the fixture killed it
            relay.start()
            restarted.append(time.monotonic())

    last = 0.0
    thread = threading.Thread(target=restart, daemon=True)
    try:
        for i, batch in enumerate(loader):
            got.update(batch["__key__"])
            last = time.monotonic()
            if i == 1:
                relay.kill()  # open connections are cut, new ones refused
                thread.start()
    finally:
        give_up.set()
        if thread.is_alive():
            thread.join()
    assert restarted and last > restarted[0]  # batches came after the outage: their reads waited it out
    assert got == Counter(all_keys(COUNTS))  # every sample exactly once


def test_an_outage_longer_than_the_budget_fails_within_budget_plus_one_timeout(
    data: Path, s3: Bucket, fault_proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = _uploaded(s3, data)
    proxy: FaultProxy = fault_proxy(s3.server.endpoint)
    budget, timeout = 4.0, 2.0
    loader = make_loader(
        f"{url}/index.json", batch_size=4, num_workers=0, recipe=None, storage_options=_through(proxy, s3),
        retry_seconds=budget, read_timeout=timeout, segment_samples=4,
    )  # fmt: skip
    it = iter(loader)
    next(it)
    proxy.stop()  # for good
    stopped = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="pass_wds.storage"),
        pytest.raises(storage.StorageError) as e,
    ):
        for _ in it:
            pass
    took = time.monotonic() - stopped
    assert budget * 0.75 <= took <= budget + timeout + 3.0, took  # retried, but not past budget + one timeout
    msg = _one_line(str(e.value))
    assert isinstance(e.value, storage.StorageConnectionError)
    assert msg.startswith(f"cannot connect to {proxy.url}: giving up reading {url}/"), msg
    assert "failed tries over" in msg and "check the endpoint URL" in msg
    assert "retrying" in caplog.text  # each retry said so, with the cause


def test_a_server_that_accepts_and_never_answers_costs_the_timeout_not_minutes(tmp_path: Path) -> None:
    """Before: 6 tries x 60 s read timeout held a job for 6 minutes, and make_loader could change neither."""
    with socket.socket() as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen(64)  # the kernel completes connections; nobody ever reads or answers
        port = sink.getsockname()[1]
        url = f"http://127.0.0.1:{port}/d/index.json"
        started = time.monotonic()
        with pytest.raises(storage.StorageError) as e:
            make_loader(url, batch_size=4, num_workers=0, recipe=None, retry_seconds=2, read_timeout=1)
        took = time.monotonic() - started
    assert took <= 2 + 1 + 3.0, took
    msg = _one_line(str(e.value))
    assert msg.startswith(f"no answer from 127.0.0.1:{port} for 1 s (read_timeout)"), msg
    assert "giving up reading" in msg


@pytest.mark.parametrize("bad", [{"retry_seconds": -1}, {"read_timeout": 0}, {"retry_seconds": "soon"}])
def test_retry_options_are_checked_in_one_line(data: Path, bad: dict[str, Any]) -> None:
    from pass_wds.config import ConfigError

    with pytest.raises(ConfigError, match=rf"^{next(iter(bad))} must be"):
        make_loader(str(data / "index.json"), batch_size=4, num_workers=0, **bad)


# ------------------------------------------------------------------------------- errors that name the cause


def _nothing_listens() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def http_cases(data: Path, http_server: HttpServer, fault_proxy: Any) -> Iterator[dict[str, Any]]:
    base = _served(http_server, data)
    userinfo = base.replace("http://", f"http://user:{PASSWORD}@")
    failing: FaultProxy = fault_proxy(http_server.url)
    failing.fail_first(10_000, status=500)
    dead = _nothing_listens()
    http_server.forbidden.update({"d/index.json", "d/shard-000001.tar"})
    yield {
        # name: (source, the start of the one line, and what it must contain)
        "403": (
            f"{base}/index.json",
            f"permission denied to read {base}/index.json (HTTP 403); credentials: none",
        ),
        "403-userinfo": (
            f"{userinfo}/index.json",
            "permission denied to read http://***@127.0.0.1",
            "credentials: user and password in the URL",
        ),
        "403-presigned": (
            [f"{base}/shard-000001.tar{PRESIGN}"],
            f"permission denied to read {base}/shard-000001.tar?X-Amz-Algorithm",
            "credentials: the URL's signature (a presigned URL",
        ),
        "500": (f"{failing.url}/d/index.json", "server error 500: giving up reading", "failed tries over"),
        "refused": (f"http://{dead}/d/index.json", f"cannot connect to {dead}: giving up reading"),
        "404": (f"{base}/missing/index.json", f"{base}/missing/index.json not found"),
    }


def _check(msg: str, expected: tuple[Any, ...]) -> None:
    _one_line(msg)
    assert msg.startswith(expected[1]), msg
    for part in expected[2:]:
        assert part in msg, msg
    assert PASSWORD not in msg and SIG not in msg


CASES = ["403", "403-userinfo", "403-presigned", "500", "refused", "404"]


@pytest.mark.parametrize("case", CASES)
def test_http_loader_errors_name_the_cause(http_cases: dict[str, Any], case: str) -> None:
    expected = http_cases[case]
    started = time.monotonic()
    with pytest.raises((storage.StorageError, ValueError)) as e:
        make_loader(expected[0], batch_size=4, num_workers=0, recipe=None, retry_seconds=1, read_timeout=2)
    _check(str(e.value), expected)
    if case.startswith(("403", "404")):
        assert time.monotonic() - started < 1.0  # permanent: no retry


@pytest.mark.parametrize("case", CASES)
def test_http_cli_errors_name_the_cause(http_cases: dict[str, Any], case: str) -> None:
    expected = http_cases[case]
    source = expected[0] if isinstance(expected[0], str) else expected[0][0]
    commands = ["verify", "inspect"] if case in ("403-userinfo", "500") else ["verify"]
    for command in commands:
        r = subprocess.run(
            [*PASS_WDS, command, source, "--retry-seconds", "1", "--read-timeout", "2"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pass-wds: error: ")]
        assert len(lines) == 1, r.stderr
        _check(lines[0].removeprefix("pass-wds: error: "), expected)
        assert PASSWORD not in r.stdout + r.stderr and SIG not in r.stdout + r.stderr


def test_a_forbidden_shard_mid_epoch_is_one_line_from_the_workers(
    data: Path, http_server: HttpServer
) -> None:
    base = _served(http_server, data)
    http_server.forbidden.add("d/shard-000002.tar")
    loader = make_loader(f"{base}/index.json", batch_size=4, num_workers=2, recipe=None, retry_seconds=1)
    with pytest.raises(storage.StoragePermissionError) as e:
        _keys(loader)
    msg = _one_line(str(e.value))
    assert msg == (
        f"permission denied to read {base}/shard-000002.tar (HTTP 403); credentials: none (no userinfo, signature or "
        "headers)"
    ), msg


@pytest.fixture
def s3_cases(data: Path, s3: Bucket, fault_proxy: Any) -> dict[str, Any]:
    url = _uploaded(s3, data)
    forbidding: FaultProxy = fault_proxy(s3.server.endpoint)
    forbidding.fail_first(10_000, status=403)
    failing: FaultProxy = fault_proxy(s3.server.endpoint)
    failing.fail_first(10_000, status=503)
    dead = f"http://{_nothing_listens()}"
    so = s3.storage_options
    return {
        "403": (
            f"{url}/index.json",
            f"permission denied to read {url}/index.json (HTTP 403); credentials: key/secret from storage_options",
            {**so, "client_kwargs": {"endpoint_url": forbidding.url}},
        ),
        "503": (
            f"{url}/index.json",
            "server error 503",
            {**so, "client_kwargs": {"endpoint_url": failing.url}},
            "giving up reading",
            "failed tries over",
        ),
        "refused": (
            f"{url}/index.json",
            f"cannot connect to {dead}: giving up reading {url}/index.json",
            {**so, "client_kwargs": {"endpoint_url": dead}},
        ),
        "404": (f"{url}/nothing/index.json", f"{url}/nothing/index.json not found", so),
    }


S3_CASES = ["403", "503", "refused", "404"]


@pytest.mark.parametrize("case", S3_CASES)
def test_s3_loader_and_cli_errors_name_the_cause(s3_cases: dict[str, Any], case: str) -> None:
    source, start, so, *parts = s3_cases[case]
    expected = (source, start, *parts)
    with pytest.raises((storage.StorageError, ValueError)) as e:
        make_loader(
            source,
            batch_size=4,
            num_workers=0,
            recipe=None,
            storage_options=so,
            retry_seconds=1,
            read_timeout=2,
        )
    _check(str(e.value), expected)
    r = subprocess.run(
        [*PASS_WDS, "verify", source, "--storage-options", json.dumps(so), "--retry-seconds", "1",
         "--read-timeout", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pass-wds: error: ")]
    assert len(lines) == 1, r.stderr
    _check(lines[0].removeprefix("pass-wds: error: "), expected)
    assert so["secret"] not in r.stderr
