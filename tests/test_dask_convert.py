"""make-shards on Dask (issue 13): real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1 and a
LocalCluster. The output must be byte-identical to a local run, also after a worker is killed with SIGKILL
mid-shard and after the scheduler itself is lost; argument and missing-extra errors are one line, exit 2.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import distributed
import pytest
from conftest import FakeOutputs
from test_convert_e2e import MAKE_SHARDS, REPO, assert_no_leftovers, assert_same_output, load_index

from pass_wds import ConvertConfig, make_shards
from pass_wds import fakedata as fd

DASK = [sys.executable, "-m", "dask"]


@pytest.fixture(scope="module")
def src(fake_outputs: FakeOutputs) -> fd.FakePassResult:
    return fake_outputs.raw(n_images=480, parts=3, seed=5, workers=2)


@pytest.fixture(scope="module")
def shard_size(src: fd.FakePassResult) -> int:
    total = sum(e["size"] + 1500 for e in src.expected["accepted"].values())
    return total // 16  # ~16 shards of ~30 images


def _args(src: fd.FakePassResult, shard_size: int, out: Path) -> list[str]:
    d = src.metadata.parent
    return [
        f"{d}/PASS.{{0..2}}.tar", "--metadata", str(src.metadata), "--output", str(out),
        "--shard-size", str(shard_size), "--seed", "7",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def local_out(src: fd.FakePassResult, shard_size: int, fake_outputs: FakeOutputs) -> Path:
    """The reference: the same conversion with the default engine, one process."""
    return fake_outputs.output(src, shard_size, brace=True, seed=7)


class _Cluster:
    """``dask scheduler`` and ``dask worker`` processes (no nanny: a killed worker stays dead)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.file = tmp / "scheduler.json"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""

    def start(self, workers: int) -> None:
        self.scheduler = self._spawn(
            [*DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
             "--scheduler-file", str(self.file)], "scheduler",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.file.exists(), "dask scheduler did not start"
        for i in range(workers):
            self.workers[f"w{i}"] = self._spawn(
                [*DASK, "worker", "--scheduler-file", str(self.file), "--nthreads", "1", "--no-nanny",
                 "--name", f"w{i}", "--host", "127.0.0.1", "--no-dashboard"], f"w{i}",
            )  # fmt: skip
        with self.client() as c:
            c.wait_for_workers(workers, timeout=60)
            self.address = c.scheduler.address

    def _spawn(self, cmd: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def client(self) -> distributed.Client:
        return distributed.Client(scheduler_file=str(self.file), timeout="20s")

    def stop(self) -> None:
        for p in [*self.workers.values(), self.scheduler]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[_Cluster]:
    c = _Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def _kill_when(proc: subprocess.Popen[str], out: Path, action: object, *, deadline_s: float = 120) -> bool:
    """Poll until ``action()`` (called once at least one shard is done) returns True; False if the run ended."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and any(out.glob("pass-*.tar")) and action():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


# -------------------------------------------------------------------------------------- real processes


def test_worker_killed_mid_shard_output_identical(
    src: fd.FakePassResult, shard_size: int, local_out: Path, cluster: _Cluster, tmp_path: Path
) -> None:
    cluster.start(workers=2)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*MAKE_SHARDS, *_args(src, shard_size, out), "--scheduler", cluster.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    killed: list[str] = []
    with cluster.client() as c:
        names = {addr: w["name"] for addr, w in c.scheduler_info()["workers"].items()}

        def kill_a_busy_worker() -> bool:
            # a worker that is running a shard task right now: kill -9 it, like a node lost mid-write
            for addr, keys in c.processing().items():
                if any(str(k).startswith("write_shard") for k in keys):
                    name = names[addr]
                    os.kill(cluster.workers[name].pid, signal.SIGKILL)
                    killed.append(name)
                    return True
            return False

        try:
            fired = _kill_when(proc, out, kill_a_busy_worker)
            stdout, stderr = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert fired, f"the run ended before a worker could be killed; make the input larger\n{stderr}"
    assert cluster.workers[killed[0]].wait(timeout=10) == -signal.SIGKILL
    assert proc.returncode == 0, stderr
    assert "dashboard: http" in stderr
    assert "wrote" in stdout
    assert_same_output(out, local_out)
    assert_no_leftovers(out)  # the killed writer's temp file is gone too
    assert (out / "index.json").read_bytes() == (local_out / "index.json").read_bytes()


def test_scheduler_lost_then_rerun_resumes(
    src: fd.FakePassResult, shard_size: int, local_out: Path, cluster: _Cluster, tmp_path: Path
) -> None:
    cluster.start(workers=1)
    out = tmp_path / "out"
    args = [*MAKE_SHARDS, *_args(src, shard_size, out)]
    proc = subprocess.Popen(
        [*args, "--scheduler", cluster.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert cluster.scheduler is not None
    scheduler = cluster.scheduler
    try:

        def kill_scheduler() -> bool:  # once two shards are recorded as done
            if len(list((out / "_state").glob("shard-*.json"))) < 2:
                return False
            os.kill(scheduler.pid, signal.SIGKILL)
            return True

        fired = _kill_when(proc, out, kill_scheduler)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert fired, "the run ended before the scheduler could be killed"
    assert proc.returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert "rerun the same command to resume" in lines[-1] and "Traceback" not in stderr, stderr
    assert not (out / "index.json").exists()
    assert len(list(out.glob("pass-*.tar"))) < len(load_index(local_out)["shardlist"])

    r = subprocess.run(
        [*args, "--cluster", "local", "--workers", "2"], capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stderr
    kept = re.search(r"kept (\d+) shards .*completed by an earlier run", r.stdout)
    assert kept and int(kept.group(1)) >= 2, r.stdout
    assert_same_output(out, local_out)
    assert_no_leftovers(out)


def test_local_cluster_identical(
    src: fd.FakePassResult, shard_size: int, local_out: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cfg = ConvertConfig(
        inputs=[f"{src.metadata.parent}/PASS.{{0..2}}.tar"],
        metadata=str(src.metadata),
        output=str(out),
        shard_size=str(shard_size),
        seed=7,
        cluster="local",
        workers=2,
        progress=False,
    )
    seen: list[tuple[int, int]] = []
    summary = make_shards(cfg, on_progress=lambda done, total: seen.append((done, total)))
    assert summary.shards == len(load_index(local_out)["shardlist"])
    assert seen[-1] == (summary.shards, summary.shards)  # the progress callback followed every future
    assert_same_output(out, local_out)
    assert (out / "index.json").read_bytes() == (local_out / "index.json").read_bytes()
    assert_no_leftovers(out)


# -------------------------------------------------------------------------------------- errors and config


def _one_line_exit_2(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_missing_extra_is_one_line(tmp_path: Path) -> None:
    """Without Dask installed (its import made to fail in a fresh interpreter), --cluster/--scheduler name
    the extra to install, before any work."""
    out = tmp_path / "out"
    code = (
        "import sys; sys.modules['distributed'] = None; sys.modules['dask_jobqueue'] = None\n"
        "from pass_wds.cli import make_shards_main; sys.exit(make_shards_main(sys.argv[1:]))"
    )
    for engine in (["--cluster", "local"], ["--scheduler", "tcp://127.0.0.1:1"]):
        r = subprocess.run(
            [sys.executable, "-c", code, "sample/PASS.{0..1}.tar", "-m", "sample/pass_metadata.csv",
             "-o", str(out), *engine],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        _one_line_exit_2(r, "pip install 'pass-wds[dask]'")
        assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--cluster", "nope"], ["--cluster", "nope"]),
        (["--scheduler", "localhost:8786"], ["--scheduler", "tcp://"]),
        (["--scheduler", "tcp://127.0.0.1:1", "--cluster", "local"], ["--scheduler", "--cluster"]),
        (["--cluster", "slurm"], ["slurm_cores", "slurm_memory"]),
        (["--scheduler", "tcp://127.0.0.1:1"], ["cannot reach the Dask scheduler", "tcp://127.0.0.1:1"]),
    ],
)
def test_engine_argument_errors(extra: list[str], words: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run(
        [*MAKE_SHARDS, "sample/PASS.{0..1}.tar", "-m", "sample/pass_metadata.csv", "-o", str(out), *extra],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    _one_line_exit_2(r, *words)
    assert not out.exists()


def test_slurm_options_only_with_slurm(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cluster: local\nslurm_queue: cpu\n")
    r = subprocess.run(
        [*MAKE_SHARDS, "sample/PASS.{0..1}.tar", "-m", "sample/pass_metadata.csv", "-o", str(tmp_path / "o"),
         "--config", str(cfg)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    _one_line_exit_2(r, "slurm_queue", "--cluster slurm")
