"""scripts/train_ssl.py under torchrun (2 CPU processes, gloo): trains, checkpoints, resumes exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "ddp"))
from shardkit import jpeg_bytes, write_shards  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train(tmp: Path, name: str, source: str, *extra: str) -> list[list[dict[str, object]]]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_port()), str(REPO / "scripts" / "train_ssl.py"), "--config",
        str(REPO / "configs" / "train_ssl.yaml"), "--source", source, "--recipe", "builtin", "--batch-size", "4",
        "--num-workers", "2", "--image-size", "16", "--width", "8", "--epochs", "2", "--save-every", "1000",
        "--keys-log", str(tmp / name), *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return [
        [json.loads(line) for line in (tmp / f"{name}.rank{r}").read_text().splitlines()] for r in range(2)
    ]


@pytest.mark.timeout(400)
def test_train_ssl_checkpoint_resume_continues_exactly(tmp_path: Path) -> None:
    write_shards(tmp_path / "data", [20, 20], image=lambda s, i: jpeg_bytes(s * 50 + i, size=(48, 40)))
    src = str(tmp_path / "data" / "index.json")
    straight = _train(
        tmp_path, "straight", src, "--max-steps", "7", "--checkpoint", str(tmp_path / "a.pt"), "--no-resume"
    )
    part = _train(
        tmp_path, "part", src, "--max-steps", "3", "--checkpoint", str(tmp_path / "b.pt"), "--no-resume"
    )
    rest = _train(
        tmp_path, "rest", src, "--max-steps", "7", "--checkpoint", str(tmp_path / "b.pt"), "--resume"
    )
    for r in range(2):
        assert [s["step"] for s in straight[r]] == list(range(1, 8))  # 5 steps per epoch: crosses an epoch
        assert [s["step"] for s in rest[r]] == [4, 5, 6, 7]
        assert [s["keys"] for s in part[r] + rest[r]] == [s["keys"] for s in straight[r]]
        for a, b in zip(part[r] + rest[r], straight[r], strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    assert not set(straight[0][0]["keys"]) & set(straight[1][0]["keys"])
