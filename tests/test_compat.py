"""A torch/torchvision pair that does not match is refused in one line naming both versions and the fix
(issue 20 item 6), before torchvision's own 29-line ``operator torchvision::nms does not exist``.

The subprocess tests plant package metadata (and, for a broken build, a torchvision that fails to load its
operators) in front of the real packages on ``PYTHONPATH``; ``scripts/check_torch_range.py`` does the same
with real installs of the tested pairs in throwaway environments."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from pass_wds.compat import TESTED, fix_command, matching_torchvision, pair_problem

REPO = Path(__file__).resolve().parents[1]
TORCH = metadata.version("torch")
VISION = metadata.version("torchvision")


def test_the_pairing_rule() -> None:
    assert matching_torchvision("2.13.0+cpu") == "0.28"
    assert matching_torchvision("2.14.1") == "0.29"
    assert matching_torchvision("2.1.2+cu121") == "0.16"
    assert matching_torchvision("1.13.1") is None  # another scheme: not judged
    assert (
        pair_problem("2.13.0+cpu", "0.28.0") is None and pair_problem("2.14.1+cu130", "0.29.1+cu130") is None
    )
    assert pair_problem("1.13.1", "0.29.0") is None
    for t, v in TESTED:
        assert pair_problem(t, v) is None
    assert pair_problem(TORCH, VISION) is None  # what this suite runs with


def test_the_message_names_both_versions_and_the_fix() -> None:
    msg = pair_problem("2.13.0+cpu", "0.29.1")
    assert msg is not None and "\n" not in msg
    assert msg.startswith("torch 2.13.0+cpu and torchvision 0.29.1 do not match")
    assert "needs torchvision 0.28.x" in msg
    assert (
        "pip install 'torch==2.13.0' 'torchvision==0.28.*' --index-url https://download.pytorch.org/whl/cpu"
        in msg
    )
    assert fix_command("2.14.1+cu126").endswith("--index-url https://download.pytorch.org/whl/cu126")
    assert fix_command("2.14.1") == "pip install 'torch==2.14.1' 'torchvision==0.29.*'"  # PyPI's own build


def _plant(root: Path, version: str, *, broken: bool = False) -> dict[str, str]:
    """torchvision ``version`` as package metadata in front of the real one (and a module that fails the
    way a torchvision of another build does, if ``broken``)."""
    dist = root / f"torchvision-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchvision\nVersion: {version}\n")
    if broken:
        (root / "torchvision").mkdir()
        (root / "torchvision" / "__init__.py").write_text(
            'raise RuntimeError("operator torchvision::nms does not exist")\n'
        )
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}


def _other_release() -> str:
    minor = int(VISION.split(".")[1])
    return f"0.{minor - 1}.0"


@pytest.mark.parametrize(
    "code",
    ["from pass_wds import make_loader; make_loader", "import pass_wds.loading", "import pass_wds.augment"],
)
def test_importing_the_loader_with_another_torchvision_fails_in_one_line(tmp_path: Path, code: str) -> None:
    other = _other_release()
    r = subprocess.run(
        [sys.executable, "-c", code], env=_plant(tmp_path, other), capture_output=True, text=True
    )
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"pass_wds.compat.TorchMismatchError: torch {TORCH} and torchvision {other} do not match"
    )
    assert f"needs torchvision {matching_torchvision(TORCH)}.x" in last and "pip install" in last
    assert "torchvision::nms" not in r.stderr  # refused before torchvision's import


def test_commands_say_it_in_one_line_and_torch_free_ones_still_work(tmp_path: Path) -> None:
    env = _plant(tmp_path / "site", _other_release())
    cli = [sys.executable, "-m", "pass_wds.cli"]
    out = tmp_path / "out"
    r = subprocess.run(
        [*cli, "make-shards", "--config", "configs/sample.yaml", "--output", str(out), "--no-progress"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr  # make-shards, verify and inspect never import torch
    assert subprocess.run([*cli, "verify", str(out)], env=env, capture_output=True).returncode == 0
    for cmd in (
        ["preview", str(out), "--out", str(tmp_path / "p.png")],
        ["bench", str(out), "--batches", "1"],
    ):
        r = subprocess.run([*cli, *cmd], env=env, capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (cmd, r.stderr)
        assert lines[0].startswith("pass-wds: error: torch ") and "do not match" in lines[0], lines
    script = [sys.executable, str(REPO / "scripts" / "train_ssl.py"), "--source", str(out)]
    r = subprocess.run(
        [*script, "--output-dir", str(tmp_path / "run")], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("train_ssl: error: torch ") and "do not match" in r.stderr


def test_a_torchvision_of_another_build_is_refused_in_one_line_too(tmp_path: Path) -> None:
    """Same version numbers, different builds (a CPU torch with PyPI's CUDA torchvision): torchvision fails to
    load its operators; that is said in one line with the fix, not as its traceback."""
    env = _plant(tmp_path, VISION, broken=True)
    r = subprocess.run(
        [sys.executable, "-c", "import pass_wds.loading"], env=env, capture_output=True, text=True
    )
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and last.startswith(
        f"pass_wds.compat.TorchMismatchError: torchvision {VISION} cannot load its compiled operators with torch"
    ), r.stderr
    assert "different builds" in last and "pip install" in last
    r = subprocess.run(
        [sys.executable, "-m", "pass_wds.cli", "preview", str(REPO / "sample"), "--out", str(tmp_path / "p.png")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_keep_torch_pins_the_installed_torch_and_its_own_torchvision(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "keep_torch.py")], capture_output=True, text=True
    )
    assert r.returncode == 0
    pins = [ln.split("#")[0].strip() for ln in r.stdout.splitlines() if ln.split("#")[0].strip()]
    assert pins == [f"torch=={TORCH}", f"torchvision=={VISION}"]
    other = _other_release()  # a torchvision of another release: pin the series built for this torch instead
    env = _plant(tmp_path, other)
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "keep_torch.py")], env=env, capture_output=True, text=True
    )
    pins = [ln.split("#")[0].strip() for ln in r.stdout.splitlines() if ln.split("#")[0].strip()]
    assert pins == [f"torch=={TORCH}", f"torchvision=={matching_torchvision(TORCH)}.*"]


def test_keep_torch_uses_the_same_pairing_rule() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import keep_torch
    finally:
        sys.path.remove(str(REPO / "scripts"))
    for v in ("2.0.1", "2.1.2+cu121", "2.13.0+cpu", "2.14.1", "2.15.0", "1.13.1", "3.0.0", "nightly"):
        assert keep_torch.matching_torchvision(v) == matching_torchvision(v), v
