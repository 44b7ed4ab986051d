"""A folder is only ever changed where pass-wds wrote it (issue 9, item 1): foreign entries refuse the run,
``--overwrite`` removes only what the earlier output itself lists, and a second run into a busy output
refuses with one line (a lock)."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image
from servers import Bucket, HttpServer

from pass_wds.cli import make_shards_main

pytestmark = pytest.mark.timeout(120)


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((48, 32), 30 + seed).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "PASS.0.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(12):
            data = _jpeg(i)
            info = tarfile.TarInfo(f"k{i:02d}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def run(*args: str | Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = make_shards_main([str(a) for a in (*args, "--allow-missing-metadata", "--no-progress")])
    return rc, err.getvalue()


def _one_line(rc: int, err: str, *words: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


FOREIGN = {
    "notes.txt": b"my notes",
    "pass-backup.tar": b"precious",
    "pass-000099.tar": b"not ours either",
    "other.tmp-0123456789ab": b"someone's temp file",
    "pass-000000.tar.tmp-abcdefabcdef": b"a temp file we did not write",
}


def _plant(out: Path, ours_exists: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, data in FOREIGN.items():
        if ours_exists and name.startswith("pass-000000.tar.tmp-"):
            continue  # next to our own pass-000000.tar, this is indistinguishable from our own leftover
        (out / name).write_bytes(data)
    (out / "sub").mkdir()
    (out / "sub" / "keep.jpg").write_bytes(b"x")


def _foreign_intact(out: Path, ours_exists: bool = False) -> None:
    for name, data in FOREIGN.items():
        if ours_exists and name.startswith("pass-000000.tar.tmp-"):
            continue
        assert (out / name).read_bytes() == data, name
    assert (out / "sub" / "keep.jpg").read_bytes() == b"x"


def test_foreign_folder_is_refused_before_listing(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _plant(out)
    before = _tree(out)
    line = _one_line(*run(src, "-o", out), "did not write")
    assert "notes.txt" in line and "2 more" in line
    assert _tree(out) == before


def test_overwrite_keeps_foreign_files(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _plant(out)
    rc, err = run(src, "-o", out, "--overwrite", "--shard-size", "4KB")
    assert rc == 0, err
    _foreign_intact(out)
    index = json.loads((out / "index.json").read_text())
    assert index["totals"]["samples"] == 12


def test_overwrite_refuses_to_replace_a_foreign_file_under_our_name(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "pass-000000.tar").write_bytes(b"somebody else's archive")
    _one_line(*run(src, "-o", out, "--overwrite"), "pass-000000.tar")
    assert (out / "pass-000000.tar").read_bytes() == b"somebody else's archive"


def test_overwrite_removes_only_what_the_old_manifest_lists(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, err = run(src, "-o", out, "--shard-size", "4KB")
    assert rc == 0, err
    old = json.loads((out / "index.json").read_text())
    assert len(old["shardlist"]) > 2
    _plant(out, ours_exists=True)  # the user adds files next to a finished output
    rc, err = run(src, "-o", out, "--overwrite", "--shard-size", "1MB", "--seed", "3")
    assert rc == 0, err
    _foreign_intact(out, ours_exists=True)
    new = json.loads((out / "index.json").read_text())
    assert len(new["shardlist"]) == 1
    ours = {e["url"] for e in new["shardlist"]} | {e["idx"] for e in new["shardlist"]}
    stale = {e["url"] for e in old["shardlist"]} | {e["idx"] for e in old["shardlist"]}
    assert not {p.name for p in out.iterdir()} & (stale - ours)  # the old output's own shards are gone


STATE_FOREIGN = {
    "_state/mine.txt": b"the user's own notes",
    "_state/plan.json.bak": b"a copy the user made",
    "_state/shard-000000.json.orig": b"another copy",
    "_state/shard-999999.json": b"a name like ours, but no shard of this output",
    "_state/other.tmp-0123456789ab": b"someone's temp file",
    "_state/sub/deep.txt": b"in a subfolder of _state",
}


def _plant_state(out: Path) -> None:
    for name, data in STATE_FOREIGN.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)


def _state_is_only_theirs(out: Path) -> None:
    for name, data in STATE_FOREIGN.items():
        assert (out / name).read_bytes() == data, name
    left = {str(p.relative_to(out)) for p in (out / "_state").rglob("*") if p.is_file()}
    assert left == set(STATE_FOREIGN), left - set(STATE_FOREIGN)  # and nothing of ours is left behind


def test_user_files_in_the_state_folder_survive_every_cleanup(src: Path, tmp_path: Path) -> None:
    """Before: the end of every run and --overwrite removed _state/ with everything in it, a user's files too.
    Every folder name pass-wds uses gets user files: the output (FOREIGN), _state/ and a folder inside it."""
    out = tmp_path / "out"
    rc, err = run(src, "-o", out, "--shard-size", "4KB", "--shard-range", "0:1")  # an unfinished output
    assert rc == 0, err
    _plant_state(out)
    rc, err = run(src, "-o", out, "--shard-size", "4KB")  # resumes, finishes, removes its own state
    assert rc == 0, err
    _state_is_only_theirs(out)
    rc, err = run(src, "-o", out, "--shard-size", "4KB")  # already complete
    assert rc == 0, err
    _state_is_only_theirs(out)
    _plant(out, ours_exists=True)
    rc, err = run(src, "-o", out, "--overwrite", "--shard-size", "1MB", "--seed", "3")  # replaces the output
    assert rc == 0, err
    _state_is_only_theirs(out)
    _foreign_intact(out, ours_exists=True)
    assert json.loads((out / "index.json").read_text())["seed"] == 3


def test_rerun_of_own_output_is_not_foreign(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(src, "-o", out)[0] == 0
    rc, err = run(src, "-o", out)
    assert rc == 0, err


def test_second_concurrent_run_is_refused(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(src, "-o", out, "--shard-size", "4KB")[0] == 0
    lock = out / "_state" / "lock"
    lock.parent.mkdir(exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run in progress holds this
        before = _tree(out)
        _one_line(*run(src, "-o", out, "--overwrite", "--seed", "9"), "another make-shards")
        assert _tree(out) == before
    finally:
        os.close(fd)
    rc, err = run(src, "-o", out, "--overwrite", "--seed", "9")  # once it is released, the run goes ahead
    assert rc == 0, err


def test_shard_range_tasks_share_the_lock(src: Path, tmp_path: Path) -> None:
    """Slurm array tasks (``--shard-range``) run side by side; a full run waits for none of them."""
    out = tmp_path / "out"
    (out / "_state").mkdir(parents=True)
    fd = os.open(out / "_state" / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # another range task
        rc, err = run(src, "-o", out, "--shard-size", "4KB", "--shard-range", "0:1")
        assert rc == 0, err
        _one_line(*run(src, "-o", out, "--shard-size", "4KB"), "another make-shards")
    finally:
        os.close(fd)


def test_object_store_lock_is_best_effort(src: Path, s3: Bucket) -> None:
    """On S3 a live lock object of another host refuses a full run; a stale one (old heartbeat, or a dead
    process on this host) does not."""
    so = json.dumps(s3.storage_options)
    out = f"{s3.url}/out"
    live = {"host": "node-7", "pid": 1, "token": "other", "time": time.time()}
    s3.put("out/_state/lock.json", json.dumps(live).encode())
    _one_line(*run(src, "-o", out, "--storage-options", so), "another make-shards", "node-7")
    assert s3.keys("out/") == ["out/_state/lock.json"]
    stale = {**live, "time": time.time() - 3600}
    s3.put("out/_state/lock.json", json.dumps(stale).encode())
    rc, err = run(src, "-o", out, "--storage-options", so)
    assert rc == 0, err
    assert "out/_state/lock.json" not in s3.keys("out/")  # released with the state at the end
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = {**live, "host": socket.gethostname(), "pid": dead.pid}
    s3.put("out/_state/lock.json", json.dumps(mine).encode())
    rc, err = run(src, "-o", out, "--storage-options", so, "--seed", "5", "--overwrite")
    assert rc == 0, err


def test_two_real_runs_into_one_output(http_server: HttpServer, tmp_path: Path) -> None:
    """Two make-shards processes at once: the second refuses with one line, the first finishes intact."""
    with tarfile.open(http_server.root / "PASS.0.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(40):
            data = _jpeg(i) + bytes(20_000)  # ~1 MB in all: a slow server takes seconds to send it
            info = tarfile.TarInfo(f"k{i:02d}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    http_server.chunk_delay = 0.5
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "pass_wds.cli",
        "make-shards",
        f"{http_server.url}/PASS.0.tar",
        "-o",
        str(out),
    ]
    first = subprocess.Popen(
        [*cmd, "--allow-missing-metadata", "--no-progress", "--no-validate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (out / "_state" / "lock").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        _one_line(*run(f"{http_server.url}/PASS.0.tar", "-o", out), "another make-shards")
        _, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert json.loads((out / "index.json").read_text())["totals"]["samples"] == 40
