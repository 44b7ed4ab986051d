"""The node-local shard cache, fed by a real HTTP server that counts requests."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import HttpServer

from pass_wds import storage
from pass_wds.storage.cache import ShardCache

KB = 1000


def _put(server: HttpServer, rel: str, data: bytes) -> str:
    path = server.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{server.url}/{rel}"


def test_lru_eviction_under_the_cap(http_server: HttpServer, tmp_path: Path) -> None:
    cache = ShardCache(str(tmp_path / "cache"), max_bytes=250 * KB)
    a, b, c = (_put(http_server, f"ds/pass-00000{i}.tar", bytes([i]) * 100 * KB) for i in range(3))
    pa = cache.get(a)  # access times are stamped in ns by the cache itself: no sleeps needed for the order
    pb = cache.get(b)
    assert cache.get(a) == pa  # a hit: refreshes a's access time, no new request
    pc = cache.get(c)  # 300 KB > cap: the least recently used (b) goes
    assert os.path.exists(pa) and os.path.exists(pc) and not os.path.exists(pb)
    assert cache.size() <= 250 * KB
    assert len(http_server.gets("ds/pass-000000.tar")) == 1
    assert Path(pa).read_bytes() == bytes([0]) * 100 * KB
    cache.get(b)  # evicted entries come back on demand
    assert len(http_server.gets("ds/pass-000001.tar")) == 2
    assert cache.size() <= 250 * KB


def test_same_basename_in_two_datasets_does_not_collide(http_server: HttpServer, tmp_path: Path) -> None:
    cache = ShardCache(str(tmp_path / "cache"), max_bytes=10**9)
    u1 = _put(http_server, "v1/pass-000000.tar", b"one" * 1000)
    u2 = _put(http_server, "v2/pass-000000.tar", b"two" * 1000)
    p1, p2 = cache.get(u1), cache.get(u2)
    assert p1 != p2 and p1.endswith("-pass-000000.tar")
    assert Path(p1).read_bytes() == b"one" * 1000 and Path(p2).read_bytes() == b"two" * 1000
    # the same URL on another endpoint is another object too
    assert cache.entry_path("s3://b/pass-000000.tar", {"client_kwargs": {"endpoint_url": "http://a"}}) != (
        cache.entry_path("s3://b/pass-000000.tar", {"client_kwargs": {"endpoint_url": "http://b"}})
    )


def test_checksum_mismatch_caches_nothing(http_server: HttpServer, tmp_path: Path) -> None:
    cache = ShardCache(str(tmp_path / "cache"), max_bytes=10**9)
    url = _put(http_server, "ds/pass-000000.tar", b"x" * 5000)
    with pytest.raises(storage.StorageError, match="sha256 differs"):
        cache.get(url, sha256="0" * 64)
    with pytest.raises(storage.StorageError, match="index.json says 4999"):
        cache.get(url, size=4999)
    assert cache.entries() == [] and not [n for n in os.listdir(cache.directory) if ".tmp-" in n]
    good = hashlib.sha256(b"x" * 5000).hexdigest()
    assert Path(cache.get(url, size=5000, sha256=good)).read_bytes() == b"x" * 5000


def test_open_stream_through_the_cache(http_server: HttpServer, tmp_path: Path) -> None:
    data = os.urandom(300 * KB)
    url = _put(http_server, "ds/pass-000000.tar", data)
    cache = ShardCache(str(tmp_path / "cache"), max_bytes=10**9)
    for start, end in ((0, None), (1000, 2000), (299_000, 300_000)):
        with storage.open_stream(cache.get(url), start, end) as f:
            assert f.read() == data[start:end]
    assert len(http_server.gets("ds/pass-000000.tar")) == 1


_RENAMER = """
import os, sys, time
directory, mark, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
pid, end, i = os.getpid(), time.monotonic() + seconds, 0
while time.monotonic() < end:  # downloads finishing: temp files renamed into place, 100 at a time
    names = [os.path.join(directory, f"{k:016x}-pass-{k:06d}.tar") for k in range(100)]
    for name in names:
        open(f"{name}{mark}{pid}-{i:08x}", "wb").close()
    for name in names:
        os.replace(f"{name}{mark}{pid}-{i:08x}", name)
    i += 1
"""


def test_evict_while_another_process_renames_temp_files(tmp_path: Path) -> None:
    """evict() scans for temp files of dead downloads; one renamed into place by a live process between the
    scan and its stat() must be skipped, not raise FileNotFoundError (this failed within a second before)."""
    cache = ShardCache(str(tmp_path / "cache"), max_bytes=10**9)
    renamer = subprocess.Popen(
        [sys.executable, "-c", _RENAMER, cache.directory, storage.TMP_MARK, "2.0"], stderr=subprocess.PIPE
    )
    evictions = 0
    try:
        while renamer.poll() is None:
            assert cache.evict() == []  # under the cap: nothing is evicted, and nothing raises
            evictions += 1
    finally:
        renamer.kill()
        _, err = renamer.communicate()
    assert renamer.returncode == 0, err.decode()
    assert evictions > 100 and len(cache.entries()) == 100


def _worker(args: tuple[str, str, str, int]) -> tuple[str, str]:
    directory, url, sync_dir, i = args
    Path(sync_dir, f"ready-{i}").touch()
    while not Path(sync_dir, "go").exists():
        time.sleep(0.005)
    cache = ShardCache(directory, max_bytes=10**9)
    with open(cache.get(url), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return cache.entry_path(url), digest


def test_one_download_per_node_for_concurrent_processes(http_server: HttpServer, tmp_path: Path) -> None:
    data = os.urandom(1_500_000)
    url = _put(http_server, "ds/pass-000007.tar", data)
    http_server.chunk_delay = 0.1  # a slow download (~0.6 s), so the others really have to wait for it
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    cache_dir = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pending = pool.map_async(_worker, [(cache_dir, url, str(sync_dir), i) for i in range(4)])
        deadline = time.monotonic() + 60
        while len(list(sync_dir.glob("ready-*"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        (sync_dir / "go").touch()
        results = pending.get(timeout=120)
    assert {r[1] for r in results} == {hashlib.sha256(data).hexdigest()}
    assert len({r[0] for r in results}) == 1
    assert len(http_server.gets("ds/pass-000007.tar")) == 1  # one download for the whole node
    assert not [n for n in os.listdir(cache_dir) if ".tmp-" in n]


def test_eviction_never_touches_files_the_cache_did_not_write(
    http_server: HttpServer, tmp_path: Path
) -> None:
    """A cache pointed at a folder with the user's files evicts only its own entries (issue 9, item 1)."""
    (http_server.root / "s.tar").write_bytes(b"s" * 5000)
    folder = tmp_path / "cache"
    folder.mkdir()
    mine = {"notes.txt": b"n" * 9000, "draft.tmp-1": b"d" * 9000, "0123456789abcdef": b"x" * 9000}
    for name, data in mine.items():
        (folder / name).write_bytes(data)
        os.utime(folder / name, (0, 0))  # the oldest files in the folder, and old "temp files"
    cache = ShardCache(str(folder), max_bytes=1000)
    cache.get(f"{http_server.url}/s.tar")
    for name, data in mine.items():
        assert (folder / name).read_bytes() == data, name
