"""The built wheel: what ships (the built-in recipe YAML) and what does not (test data), installed and used
away from the source tree, so a recipe cannot silently come from the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_the_recipes_and_no_test_data(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "pass_wds", src / "pass_wds", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests", src / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, src],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    recipes = sorted(n for n in names if n.startswith("pass_wds/augment/recipes/"))
    assert recipes == sorted(
        f"pass_wds/augment/recipes/{p.name}" for p in (REPO / "pass_wds/augment/recipes").glob("*.yaml")
    )
    assert not [n for n in names if n.startswith("tests/") or "/data/" in n]
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    code = (
        "import pass_wds.augment as a; from pass_wds.augment import load_recipe; "
        "r = load_recipe('dino'); print(a.__file__); print(a.BUILTIN_RECIPES); print(r.view_sizes[-1])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    where, names_line, size = run.stdout.splitlines()
    assert where.startswith(str(site))  # the installed copy, not the checkout
    assert names_line == "('byol', 'dino', 'eval', 'mocov2', 'simclr', 'swav')" and size == "(96, 96)"
