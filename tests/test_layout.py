"""The layout is visible and documented (issue 17 item 7): ARCHITECTURE.md's map names every module of
``pass_wds/`` and nothing that is gone, and a module above ~500 lines is one ARCHITECTURE.md says why."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "pass_wds"
LIMIT = 550  # "about 500": a module a little over is fine; far over needs a reason


def _architecture() -> str:
    return (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))


def test_the_map_names_every_module_and_no_missing_one() -> None:
    text = _architecture()
    start = text.index("```\npass_wds/")
    block = text[start : text.index("\ntests/", start)]  # the package part of the map
    named = set(re.findall(r"(?<![/\w])([a-z_]+)\.py\b", block)) - {"__init__", "__main__"}
    present = {p.stem for p in _modules()}
    assert present - named == set(), f"modules ARCHITECTURE.md's map does not name: {sorted(present - named)}"
    assert named - present == set(), (
        f"ARCHITECTURE.md names modules that do not exist: {sorted(named - present)}"
    )


def test_large_modules_are_explained() -> None:
    text = _architecture()
    section = text[text.index("## Modules above 500 lines") :]
    for path in _modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        rel = path.relative_to(REPO).as_posix()
        if lines > LIMIT:
            assert f"`{rel}`" in section, f"{rel} has {lines} lines: split it, or say why in ARCHITECTURE.md"
