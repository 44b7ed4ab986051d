"""A forked child (a DataLoader worker) never breaks its parent's storage connections.

fsspec runs HTTP and S3 on one event loop whose epoll instance and sockets a forked child shares with its
parent. When a worker's garbage collector freed the filesystems it inherited, their finalizers closed the
parent's pooled connections from the child and so removed them from the shared epoll: the parent's next request
on such a keep-alive connection never woke up (a second ``make_loader`` after a first one's workers hung in
``exists``: until aiohttp's 5-minute session timeout, or a read timeout per try and connection once reads
were bounded). See pass_wds/storage/forks.py. Real loopback HTTP
server, moto S3 behind a keep-alive proxy, real forks; each check runs in a subprocess with a timeout, so a
regression fails in a minute instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from servers import Bucket, HttpServer
from shardkit import write_shards

TESTS = str(Path(__file__).resolve().parent)  # tests/shardkit.py for the loader script

# The parent reads an object (its keep-alive connection stays pooled), forks children that run their garbage
# collector (what a busy worker does sooner or later) and exit, then uses the store again.
STORAGE_SCRIPT = textwrap.dedent(
    """
    import gc, json, multiprocessing, sys, time
    from pass_wds import storage

    url, missing, so = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) or None
    data = storage.read_bytes(url, so)

    def worker():
        gc.collect()

    for _ in range(2):
        p = multiprocessing.get_context("fork").Process(target=worker)
        p.start()
        p.join()
        assert p.exitcode == 0, p.exitcode
    start = time.monotonic()
    found = (storage.exists(missing, so), storage.exists(url, so), storage.read_bytes(url, so) == data)
    print("AFTER FORK", found, f"{time.monotonic() - start:.1f} s")
    """
)

# Two loaders in one process: a second one resolved while the first one's workers run, and a third (a missing
# source: one line) after they are gone. The workers collect garbage on their first sample.
LOADER_SCRIPT = textwrap.dedent(
    """
    import gc, sys, time
    from shardkit import TinyRecipe
    from pass_wds.loading import make_loader

    class CollectingRecipe(TinyRecipe):
        collected = False  # per worker process

        def __call__(self, data, ext, rng):
            if not CollectingRecipe.collected:
                CollectingRecipe.collected = True
                gc.collect()
            return super().__call__(data, ext, rng)

    source = sys.argv[1]
    first = make_loader(source, batch_size=3, num_workers=2, recipe=CollectingRecipe(), shuffle=False)
    batches = iter(first)
    n_first = len(next(batches)["__key__"])
    start = time.monotonic()
    second = make_loader(source, batch_size=3, num_workers=0, recipe=TinyRecipe(), shuffle=False)
    n_second = sum(len(b["__key__"]) for b in second)
    n_first += sum(len(b["__key__"]) for b in batches)
    try:
        make_loader(source.replace("/d/", "/nowhere/"), batch_size=3, num_workers=0)
    except Exception as e:
        print("ERROR", type(e).__name__)
    print("LOADED", n_first, n_second, f"{time.monotonic() - start:.1f} s")
    """
)
BUDGET_S = 60  # each script takes seconds; a hang took aiohttp's session timeout (300 s)
# The calls after the forks take well under a second; a connection the child broke cost a read timeout (30 s)
# per try once reads were bounded by one, so more than this is the bug, not a slow machine.
SLOW_S = 15.0


def run_script(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), TESTS]))}
    try:
        r = subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=BUDGET_S, env=env
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"storage calls after a fork hung ({BUDGET_S} s): {e.stdout!r} {e.stderr!r}")
    assert r.returncode == 0, r.stderr
    took = re.findall(r"([0-9.]+) s$", r.stdout.strip())
    assert took and float(took[-1]) < SLOW_S, f"storage calls after a fork took too long: {r.stdout}"
    return r.stdout


def test_http_connections_survive_a_forked_worker(http_server: HttpServer) -> None:
    (http_server.root / "a.bin").write_bytes(os.urandom(50_000))
    url = http_server.url
    out = run_script(STORAGE_SCRIPT, f"{url}/a.bin", f"{url}/missing.bin", "null")
    assert "AFTER FORK (False, True, True) " in out, out


def test_s3_connections_survive_a_forked_worker(s3: Bucket, fault_proxy: Any) -> None:
    """Through a keep-alive proxy: moto closes every connection itself, so none would stay pooled. (s3fs's
    finalizer leaves its session alive in the child today, so S3 did not hang; this keeps it that way.)"""
    s3.put("a.bin", os.urandom(50_000))
    proxy = fault_proxy(s3.server.endpoint)
    client = {**s3.storage_options["client_kwargs"], "endpoint_url": proxy.url}
    so = json.dumps({**s3.storage_options, "client_kwargs": client})
    out = run_script(STORAGE_SCRIPT, f"{s3.url}/a.bin", f"{s3.url}/missing.bin", so)
    assert "AFTER FORK (False, True, True) " in out, out


def test_a_loader_beside_another_loaders_workers(http_server: HttpServer) -> None:
    write_shards(http_server.root / "d", [6, 6])
    out = run_script(LOADER_SCRIPT, f"{http_server.url}/d/index.json")
    assert "LOADED 12 12 " in out and "ERROR SourceError" in out, out
