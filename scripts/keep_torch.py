#!/usr/bin/env python
"""Print pip constraints that keep the installed torch (and give it the torchvision built for it).

``make install`` runs ``pip install -e . -c <this output>``: a torch already installed (a CPU build, a
cluster's CUDA build, a conda one) stays exactly as it is, and when torchvision is missing or from another
release, pip installs the series built for that torch instead of upgrading torch to fit the newest
torchvision. With no torch installed the output is empty and pip chooses. Standard library only: it runs
before pass-wds's dependencies are installed.

    python scripts/keep_torch.py > build/keep-torch.txt && pip install -e . -c build/keep-torch.txt
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path


def _compat():  # type: ignore[no-untyped-def]
    """pass_wds/compat.py by its path: importing the package would need its dependencies."""
    path = Path(__file__).resolve().parent.parent / "pass_wds" / "compat.py"
    spec = importlib.util.spec_from_file_location("_pass_wds_compat", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def constraints() -> list[str]:
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return ["# no torch installed: pip chooses (see docs/install.md for the CPU-only line)"]
    lines = [f"# keep the installed torch {torch}", f"torch=={torch}"]
    want = _compat().matching_torchvision(torch)
    try:
        vision: str | None = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        vision = None
    if vision is not None and (want is None or vision.startswith(want + ".")):
        lines.append(f"torchvision=={vision}")
    elif want is not None:
        lines.append(f"torchvision=={want}.*  # the series built for torch {torch}")
    return lines


if __name__ == "__main__":
    sys.stdout.write("\n".join(constraints()) + "\n")
