"""scripts/train_ssl.py under torchrun (2 CPU processes, gloo): trains, checkpoints, resumes exactly; reruns
resume only their own run; Ctrl-C and option errors are one line per rank, without tracebacks."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shardkit import jpeg_bytes, write_shards

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "train_ssl.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
SMALL = ["--recipe", "builtin", "--image-size", "16", "--width", "8", "--num-workers", "1"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train(tmp: Path, name: str, source: str, *extra: str) -> list[list[dict[str, object]]]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_port()), str(SCRIPT), "--config",
        str(REPO / "configs" / "train_ssl.yaml"), "--source", source, "--recipe", "builtin", "--batch-size", "4",
        "--num-workers", "2", "--image-size", "16", "--width", "8", "--epochs", "2", "--save-every", "1000",
        "--keys-log", str(tmp / name), *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return [
        [json.loads(line) for line in (tmp / f"{name}.rank{r}").read_text().splitlines()] for r in range(2)
    ]


@pytest.mark.timeout(400)
def test_train_ssl_checkpoint_resume_continues_exactly(tmp_path: Path) -> None:
    write_shards(tmp_path / "data", [20, 20], image=lambda s, i: jpeg_bytes(s * 50 + i, size=(48, 40)))
    src = str(tmp_path / "data" / "index.json")
    straight = _train(
        tmp_path, "straight", src, "--max-steps", "7", "--output-dir", str(tmp_path / "a"), "--no-resume"
    )
    part = _train(
        tmp_path, "part", src, "--max-steps", "3", "--output-dir", str(tmp_path / "b"), "--no-resume"
    )
    rest = _train(tmp_path, "rest", src, "--max-steps", "7", "--output-dir", str(tmp_path / "b"), "--resume")
    for r in range(2):
        assert [s["step"] for s in straight[r]] == list(range(1, 8))  # 5 steps per epoch: crosses an epoch
        assert [s["step"] for s in rest[r]] == [4, 5, 6, 7]
        assert [s["keys"] for s in part[r] + rest[r]] == [s["keys"] for s in straight[r]]
        for a, b in zip(part[r] + rest[r], straight[r], strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    assert not set(straight[0][0]["keys"]) & set(straight[1][0]["keys"])


def _data(tmp: Path) -> str:
    write_shards(tmp / "data", [20, 20], image=lambda s, i: jpeg_bytes(s * 50 + i, size=(48, 40)))
    return str(tmp / "data" / "index.json")


def _script(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One process, no torchrun (the script then trains alone)."""
    cmd = [sys.executable, str(SCRIPT), *SMALL, "--batch-size", "4", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120, cwd=tmp)


@pytest.mark.timeout(300)
def test_rerun_resumes_only_its_own_run_and_says_so(tmp_path: Path) -> None:
    src = _data(tmp_path)
    run = ["--source", src, "--output-dir", str(tmp_path / "run"), "--epochs", "2"]
    first = _script(tmp_path, *run, "--max-steps", "3")
    assert first.returncode == 0 and "done: 3 steps" in first.stderr, first.stderr[-3000:]
    again = _script(tmp_path, *run, "--max-steps", "3")  # used to train 0 steps without a word
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "at step 3" in again.stderr
    assert "nothing to do" in again.stderr and "done:" not in again.stderr
    beyond = _script(tmp_path, *run, "--max-steps", "50")
    assert "--max-steps 50 is beyond 2 epochs x 10 steps = 20 steps" in beyond.stderr, beyond.stderr[-3000:]
    assert "done: 20 steps" in beyond.stderr
    other = _script(tmp_path, *run, "--lr", "0.1")
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert "is from a different run (changed: lr)" in other.stderr
    fresh = _script(tmp_path, *run, "--lr", "0.1", "--max-steps", "1", "--no-resume")
    assert fresh.returncode == 0 and "starting over" in fresh.stderr and "done: 1 steps" in fresh.stderr
    inside = subprocess.run(
        [sys.executable, str(SCRIPT), "--source", src], env=ENV, capture_output=True, text=True, cwd=REPO
    )
    assert inside.returncode == 2 and inside.stderr.startswith("train_ssl: error: --output-dir is required")
    assert not list(REPO.glob("pass-wds-runs")) and not list(REPO.glob("*.pt"))


def _launch(tmp: Path, *args: str, launcher: str = "script") -> subprocess.Popen[str]:
    """Two ranks, started by the script's own launcher (``--nproc-per-node``) or by plain torchrun."""
    if launcher == "script":
        cmd = [sys.executable, str(SCRIPT), "--nproc-per-node", "2", *SMALL, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(SCRIPT), *SMALL, *args]  # fmt: skip
    return subprocess.Popen(
        cmd,
        env=ENV,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _quiet_ranks(err: str, launcher: str) -> None:
    """No traceback at all from the script's launcher; under torchrun only torchrun's own failure report."""
    if launcher == "script":
        assert "Traceback" not in err, err[-5000:]
    else:
        assert err.count("Traceback") <= 1 and 'train_ssl.py", line' not in err, err[-5000:]
        assert "torch/distributed/run.py" in err.split("Traceback", 1)[-1]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("launcher", ["script", "torchrun"])
def test_ctrl_c_stops_every_rank_with_one_line_and_the_rerun_resumes(tmp_path: Path, launcher: str) -> None:
    src = _data(tmp_path)
    keys = tmp_path / "keys"
    run = ["--source", src, "--output-dir", str(tmp_path / "run"), "--batch-size", "4", "--save-every", "2"]
    proc = _launch(tmp_path, *run, "--epochs", "1000", "--keys-log", str(keys), launcher=launcher)
    logs = [Path(f"{keys}.rank{r}") for r in range(2)]
    deadline = time.monotonic() + 120
    while not all(p.exists() and p.read_text().count("\n") >= 3 for p in logs):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    out, err = proc.communicate(timeout=90)
    assert proc.returncode in ((130,) if launcher == "script" else (1, 130)), err[-3000:]
    _quiet_ranks(out + err, launcher)
    lines = [ln for ln in err.splitlines() if ln.startswith("rank ") and "SIGINT" in ln]
    assert sorted(ln.split(":")[0] for ln in lines) == ["rank 0", "rank 1"], err[-3000:]
    stopped = {ln.split(":")[0]: int(re.search(r"stopped at step (\d+)", ln).group(1)) for ln in lines}  # type: ignore[union-attr]
    saved = int(re.search(r"the checkpoint of step (\d+)", err).group(1))  # type: ignore[union-attr]
    # rank 0 saves the step it stopped after, unless a peer stopped first and left that step half-done;
    # then the last periodic checkpoint (--save-every 2) stands
    assert saved == stopped["rank 0"] >= 3 or saved % 2 == 0 < saved <= stopped["rank 0"], err[-3000:]
    assert abs(stopped["rank 1"] - stopped["rank 0"]) <= 1
    if launcher != "script":
        return
    # the same command again continues from that checkpoint, and says so
    again = _launch(tmp_path, *run, "--epochs", "1000", "--max-steps", str(saved + 1))
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err[-3000:]
    assert f"at step {saved}" in err and f"done: {saved + 1} steps" in err


@pytest.mark.timeout(300)
@pytest.mark.parametrize("launcher", ["script", "torchrun"])
def test_option_error_on_the_ranks_is_one_line(tmp_path: Path, launcher: str) -> None:
    src = _data(tmp_path)  # 40 samples cannot fill 2 ranks x 32
    args = ["--source", src, "--output-dir", str(tmp_path / "run"), "--batch-size", "32"]
    proc = _launch(tmp_path, *args, launcher=launcher)
    out, err = proc.communicate(timeout=180)
    line = (
        "train_ssl: error: 40 samples cannot fill one batch of 32 on each of 2 ranks ("  # the loader's words
    )
    _quiet_ranks(out + err, launcher)
    errors = [ln for ln in err.splitlines() if ln.startswith("train_ssl: error")]
    assert len(errors) == 1 and errors[0].startswith(line), err[-5000:]
    assert "--remainder pad, a smaller --batch-size" in errors[0] and "remainder='pad'" not in errors[0]
    if launcher == "script":
        assert proc.returncode == 2 and out == "" and err.splitlines() == errors, err[-5000:]
    else:  # torchrun exits 1 after its report, which names the rank's exit status
        assert proc.returncode == 1
        assert "exitcode  : 2" in err, err[-3000:]
