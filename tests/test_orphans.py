"""No process outlives its parent (issue 19 item 3): ``kill -9`` of make-shards (local processes, a Dask
LocalCluster), of one torchrun rank whose DataLoader workers are sending undecoded batches, and of a test run
that started loopback servers; afterwards no process of that run may remain after 10 s.

Processes are followed through ``/proc`` (Linux): the whole tree under the process that is killed is recorded
just before the kill, and every recorded pid must be gone (a zombie waiting for init to reap it is gone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from servers import free_port
from shardkit import write_shards

from pass_wds import fakedata as fd

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="follows processes through /proc"
)


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a live process; None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else (int(ppid), state)


def tree(root: int) -> set[int]:
    """``root`` and every live descendant."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents.setdefault(st[0], []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out and _stat(pid) is not None:
            out.add(pid)
            todo.extend(parents.get(pid, []))
    return out


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def assert_all_gone(pids: set[int], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    alive = {p for p in pids if _stat(p) is not None}
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {p for p in alive if _stat(p) is not None}
    for pid in alive:  # leave nothing behind whatever the verdict
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"{len(alive)} processes outlived the killed one by {within:.0f} s: {sorted(alive)}"


def _reap(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=30)


# ----------------------------------------------------------------------------------------------- make-shards


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> fd.FakePassResult:
    out = tmp_path_factory.mktemp("orphans-raw")
    return fd.make_fake_pass(fd.FakePassConfig(out=str(out), n_images=1200, parts=3, seed=3, workers=2))


@pytest.mark.parametrize(
    "engine", [[], ["--cluster", "local"]], ids=["local-processes", "dask-local-cluster"]
)
def test_kill_9_of_make_shards_leaves_no_worker(
    raw: fd.FakePassResult, tmp_path: Path, engine: list[str]
) -> None:
    if engine:
        pytest.importorskip("distributed")
    d = raw.metadata.parent
    cmd = [
        sys.executable, "-m", "pass_wds.cli", "make-shards", f"{d}/PASS.{{0..2}}.tar", "--metadata",
        str(raw.metadata), "--output", str(tmp_path / "out"), "--shard-size", "40KB", "--workers", "2",
        "--no-progress", *engine,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # mid-run: both workers are up and the first shards are being written
        wait_for(lambda: len(tree(proc.pid)) >= 3 and any((tmp_path / "out").glob("*.tar*")), 120, "shards")
        assert proc.poll() is None, "make-shards finished before it could be killed: make the input larger"
        family = tree(proc.pid) - {proc.pid}
        assert len(family) >= 2
        proc.send_signal(signal.SIGKILL)  # what the OOM killer or a scheduler does: no cleanup runs
        proc.wait(timeout=10)
        assert_all_gone(family)
    finally:
        _reap(proc)


# ------------------------------------------------------------------------------------------ a torchrun rank

RANK = textwrap.dedent(
    """
    import os, time
    import torch.distributed as dist
    from pass_wds.loading import make_loader
    dist.init_process_group("gloo")
    loader = make_loader({source!r}, batch_size=8, num_workers=2, recipe=None, prefetch_factor=4, seed=1)
    for i, batch in enumerate(loader):
        if i == 0:
            print("READY", dist.get_rank(), os.getpid(), flush=True)
        time.sleep(5)  # a slow step: the workers fill their queues and block sending raw-bytes batches
    """
)


def test_kill_9_of_one_torchrun_rank_leaves_no_dataloader_worker(tmp_path: Path) -> None:
    # undecoded batches of 8 x 200 KB: far more than a pipe holds, so a worker blocks in the middle of a send
    write_shards(tmp_path / "d", [64, 64], image=lambda s, i: os.urandom(200_000))
    script = tmp_path / "rank.py"
    script.write_text(RANK.format(source=str(tmp_path / "d" / "index.json")))
    log = tmp_path / "ranks.log"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        ready = lambda: [ln.split() for ln in log.read_text().splitlines() if ln.startswith("READY")]  # noqa: E731
        wait_for(lambda: len(ready()) == 2, 180, "both ranks' first batch")
        rank1 = next(int(pid) for _, rank, pid in ready() if rank == "1")
        time.sleep(2)  # the workers have filled their queues by now
        workers = tree(rank1) - {rank1}
        assert len(workers) >= 2, "rank 1 has no DataLoader workers"
        family = tree(proc.pid)
        os.kill(rank1, signal.SIGKILL)
        assert_all_gone(workers)  # the dead rank's own workers, whatever they were sending
        assert_all_gone(family)  # and then nothing of the run: torchrun stops rank 0, whose workers follow
    finally:
        _reap(proc)


# ----------------------------------------------------------------------------------------- the test servers

SERVERS = textwrap.dedent(
    """
    import sys
    from servers import MotoServer, TcpRelay
    moto = MotoServer().start()
    relay = TcpRelay(moto.endpoint).start()
    print(moto.proc.pid, relay.proc.pid, flush=True)
    sys.stdin.read()
    """
)


def test_the_test_servers_die_with_a_killed_test_run(tmp_path: Path) -> None:
    """Seen before: moto servers started by a pytest that was killed kept running (and their ports)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    code = SERVERS
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        servers = {int(p) for p in proc.stdout.readline().split()}
        assert len(servers) == 2 and all(_stat(p) is not None for p in servers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert_all_gone(servers)
    finally:
        _reap(proc)
