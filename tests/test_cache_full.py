"""A full cache disk (issue 19 item 6), on a real 1 MiB tmpfs: one line naming the cache folder, the free space
and the shard's size, or with ``cache_full="stream"`` the shard read directly (said once); no partial entry.

Mounting needs root (as in CI's container); elsewhere these tests skip, saying so.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tmpfs
from servers import HttpServer
from shardkit import all_keys, write_shards

from pass_wds import storage
from pass_wds.loading import make_loader

COUNTS = [6, 6, 6]  # three shards of ~240 KB


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tmpfs", "1m") as mount:
        yield mount


def _blob(shard: int, i: int) -> bytes:
    return random.Random(shard * 100 + i).randbytes(40_000)


@pytest.fixture
def served(http_server: HttpServer, tmp_path: Path) -> str:
    write_shards(http_server.root / "d", COUNTS, image=_blob)
    return f"{http_server.url}/d"


def _fill(disk: Path, leave: int) -> None:
    """Someone else's file, leaving ``leave`` bytes free: the cache must not touch it."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "someone-elses.bin").write_bytes(b"u" * (free - leave))


def _entries_are_complete(cache: Path, shards: Path) -> None:
    names = [n for n in os.listdir(cache) if not n.endswith(".lock") and n != "someone-elses.bin"]
    assert not [n for n in names if ".tmp-" in n], names  # no partial download left
    sizes = {p.name: p.stat().st_size for p in shards.glob("*.tar")}
    for name in names:
        shard = name.split("-", 1)[1]
        assert (cache / name).stat().st_size == sizes[shard], name  # every entry is a whole shard


@pytest.mark.parametrize(
    "source", ["index.json", "shard-{000000..000002}.tar"], ids=["size-known", "size-unknown"]
)
def test_a_full_cache_is_one_line_naming_folder_free_space_and_size(
    served: str, tiny_disk: Path, http_server: HttpServer, source: str
) -> None:
    """Before: a bare ``OSError: [Errno 28] No space left on device`` from a worker. With index.json the shard's
    size is known before the download; without it the download itself runs out of space."""
    _fill(tiny_disk, leave=100_000)
    loader = make_loader(
        f"{served}/{source}",
        batch_size=3,
        num_workers=1,
        recipe=None,
        cache_dir=str(tiny_disk),
        retry_seconds=2,
    )
    with pytest.raises(storage.CacheFullError) as e:
        list(loader)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"node cache {tiny_disk} is full: "), msg
    assert (
        " bytes free, shard http://127.0.0.1:" in msg and "needs " in msg and "cache_full='stream'" in msg
    ), msg
    if source == "index.json":
        size = (http_server.root / "d" / "shard-000000.tar").stat().st_size
        assert f"needs {size:,} bytes" in msg, msg
    assert (tiny_disk / "someone-elses.bin").stat().st_size > 800_000  # never evicted
    _entries_are_complete(tiny_disk, http_server.root / "d")


def test_cache_full_stream_reads_the_shard_directly_and_says_so_once(
    served: str, tiny_disk: Path, http_server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(tiny_disk, leave=100_000)
    loader = make_loader(
        f"{served}/index.json", batch_size=3, num_workers=0, recipe=None, cache_dir=str(tiny_disk),
        cache_full="stream",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="pass_wds"):
        got = Counter(k for batch in loader for k in batch["__key__"])
        assert got == Counter(all_keys(COUNTS))  # the whole epoch, exactly
        again = Counter(k for batch in loader for k in batch["__key__"])
    assert again == Counter(all_keys(COUNTS))
    said = [r for r in caplog.records if "cache_full='stream'" in r.getMessage()]
    assert len(said) == 1, [
        r.getMessage() for r in said
    ]  # once per process, over two epochs and three shards
    assert f"node cache {tiny_disk} is full" in said[0].getMessage()
    _entries_are_complete(tiny_disk, http_server.root / "d")


def test_the_cache_evicts_its_own_entries_before_it_calls_the_disk_full(
    served: str, tiny_disk: Path, http_server: HttpServer
) -> None:
    """A disk with room for two of the three shards and an unlimited cache_bytes: older entries make room."""
    _fill(tiny_disk, leave=550_000)
    loader = make_loader(
        f"{served}/index.json", batch_size=3, num_workers=0, recipe=None, cache_dir=str(tiny_disk), seed=3
    )
    for _ in range(3):  # every epoch reads all three shards; the disk holds them only by evicting
        assert Counter(k for batch in loader for k in batch["__key__"]) == Counter(all_keys(COUNTS))
    _entries_are_complete(tiny_disk, http_server.root / "d")


def test_cache_full_is_checked(served: str) -> None:
    from pass_wds.config import ConfigError

    with pytest.raises(ConfigError, match="^cache_full must be 'error' or 'stream', got 'later'$"):
        make_loader(f"{served}/index.json", batch_size=3, num_workers=0, cache_full="later")
