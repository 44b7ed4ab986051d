"""Issue 9 item 5: secrets never appear — in messages, logs, warnings (DataLoader workers too), exceptions and
the files pass-wds writes — and presigned shard URLs work. Real loopback HTTP server, real worker processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from servers import HttpServer
from shardkit import all_keys, write_shards
from test_trust_metadata import raw_tar

from pass_wds import storage

PASS_WDS = [sys.executable, "-m", "pass_wds.cli"]
PASSWORD = "hunter2-PASSWORD"
SIG = "deadbeefSIGNATURE"
CRED = "AKIAEXAMPLECREDENTIAL"
TOKEN = "sessionTOKENvalue"
SECRETS = (PASSWORD, SIG, CRED, TOKEN)
PRESIGN = f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CRED}%2F20260101%2Fus-east-1%2Fs3&X-Amz-Signature={SIG}&X-Amz-Security-Token={TOKEN}"


def assert_clean(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked in: {text[-2000:]}"


def files_of(folder: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in sorted(folder.rglob("*")) if p.is_file()
    )


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PASS_WDS, *map(str, args)], capture_output=True, text=True, timeout=120)


def _bad_second(shard: int, i: int) -> bytes:
    from shardkit import jpeg_bytes

    return b"\xff\xd8\xff\xe0 not a jpeg" if (shard, i) == (0, 1) else jpeg_bytes(i)


@pytest.fixture
def served(http_server: HttpServer, tmp_path: Path) -> HttpServer:
    write_shards(http_server.root / "d", [6, 6], image=_bad_second)
    return http_server


def with_password(server: HttpServer) -> str:
    return server.url.replace("http://", f"http://user:{PASSWORD}@")


def test_redact_knows_the_usual_secrets() -> None:
    url = f"https://user:{PASSWORD}@host/b/x.tar{PRESIGN}&sig={SIG}&token={TOKEN}"
    assert_clean(storage.redact(url))
    opts = {"client_kwargs": {"headers": {"Authorization": f"Bearer {TOKEN}"}}}
    assert_clean(storage.redact(f"sent Bearer {TOKEN} to host", opts))


def test_cli_verify_inspect_never_print_the_password(served: HttpServer) -> None:
    base = with_password(served)
    (served.root / "d" / "shard-000001.tar").write_bytes(b"\0" * 1024)  # verify reports a bad shard
    for args in (
        ("verify", f"{base}/d"),
        ("inspect", f"{base}/d"),
        ("verify", f"{base}/missing"),
        ("inspect", f"{base}/d/index.json{PRESIGN}"),
    ):
        r = cli(*args)
        assert "Traceback" not in r.stderr, r.stderr
        assert_clean(r.stdout, r.stderr)
    assert cli("verify", f"{base}/d").returncode == 1


LOADER_SCRIPT = textwrap.dedent(
    """
    import logging, sys, warnings
    from shardkit import TinyRecipe
    from pass_wds.loading import make_loader
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    logging.getLogger("pass_wds").setLevel(logging.DEBUG)
    warnings.simplefilter("always")
    source = {source!r}
    loader = make_loader(source, batch_size=3, num_workers=2, recipe=TinyRecipe(), shuffle=False)
    keys = [k for b in loader for k in b["__key__"]]
    print("KEYS", len(keys), loader.stats.errors, repr(loader.stats.bad))
    try:
        bad = source if isinstance(source, str) else source[0]
        make_loader(bad.replace("/d/", "/nowhere/"), batch_size=3, num_workers=0)
    except Exception as e:
        print("ERROR", type(e).__name__, e)
    """
)


def run_loader(source: str | list[str]) -> subprocess.CompletedProcess[str]:
    code = LOADER_SCRIPT.format(source=source)
    tests = str(Path(__file__).resolve().parent)  # for tests/shardkit.py
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), tests]))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)


def test_loader_workers_never_log_the_password(served: HttpServer) -> None:
    r = run_loader(f"{with_password(served)}/d/index.json")
    assert r.returncode == 0, r.stderr
    assert "KEYS 12 1" in r.stdout, r.stdout + r.stderr  # the bad sample was seen, warned and substituted
    assert "bad sample" in r.stderr
    assert "ERROR" in r.stdout
    assert_clean(r.stdout, r.stderr)


def test_presigned_shard_urls_work_and_stay_secret(served: HttpServer) -> None:
    urls = [f"{served.url}/d/shard-{i:06d}.tar{PRESIGN}" for i in range(2)]
    r = run_loader(urls)
    assert r.returncode == 0, r.stderr
    assert "KEYS 12 1" in r.stdout, r.stdout + r.stderr
    assert_clean(r.stdout, r.stderr)


def test_presigned_shards_without_idx_decode(http_server: HttpServer) -> None:
    """No .idx beside the shard: the loader scans it; the query string is not part of the name."""
    from shardkit import TinyRecipe

    from pass_wds.loading import make_loader

    write_shards(http_server.root / "d", [5], with_idx=False, with_index_json=False)
    loader = make_loader(
        [f"{http_server.url}/d/shard-000000.tar{PRESIGN}"], batch_size=5, num_workers=0, recipe=TinyRecipe()
    )
    batch = next(iter(loader))
    assert sorted(batch["__key__"]) == all_keys([5]) and loader.stats.errors == 0


def test_make_shards_keeps_secrets_out_of_every_file_and_line(
    http_server: HttpServer, tmp_path: Path
) -> None:
    www = http_server.root
    raw_tar(www / "raw.tar", ["aa01.jpg", "bb02.jpg"])
    (www / "m.csv").write_text("hash,creator\naa01,Jo\nbb02,Al\n", encoding="utf-8")
    base = with_password(http_server)
    out = tmp_path / "out"
    opts = json.dumps({"client_kwargs": {"headers": {"X-Auth-Token": TOKEN}}})
    r = cli(
        "make-shards",
        f"{base}/raw.tar{PRESIGN}",
        f"{base}/missing.tar",
        "--metadata",
        f"{base}/m.csv",
        "--output",
        out,
        "--storage-options",
        opts,
    )
    assert_clean(r.stdout, r.stderr)
    r = cli(
        "-v",
        "make-shards",
        f"{base}/raw.tar{PRESIGN}",
        "--metadata",
        f"{base}/m.csv{PRESIGN}",
        "--output",
        out,
        "--storage-options",
        opts,
    )
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout, r.stderr, files_of(out))
    index = json.loads((out / "index.json").read_text())
    assert index["totals"]["samples"] == 2
    assert index["config"]["inputs"][0].startswith("http://***@") and index["config"]["inputs"][0].endswith(
        ".tar?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***"
    )
    shutil.rmtree(out)


def test_bench_output_and_json_are_clean(served: HttpServer, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    opts = json.dumps({"client_kwargs": {"headers": {"X-Auth-Token": TOKEN}}})
    r = cli(
        "bench", f"{with_password(served)}/d/index.json", "--recipe", "none", "--batches", "1",
        "--batch-size", "2", "--workers", "0", "--profile-samples", "2", "--json", report,
        "--storage-options", opts,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout, r.stderr, report.read_text())
