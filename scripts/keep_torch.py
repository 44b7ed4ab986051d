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

import re
import sys
from importlib import metadata


def matching_torchvision(torch_version: str) -> str | None:
    """pass_wds.compat.matching_torchvision, repeated here because this runs before pass-wds's dependencies
    are installed (tests/test_compat.py checks that the two agree)."""
    m = re.match(r"(\d+)\.(\d+)", torch_version)
    if not m or int(m[1]) != 2:
        return None
    return f"0.{int(m[2]) + 15}"


def constraints() -> list[str]:
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return ["# no torch installed: pip chooses (see docs/install.md for the CPU-only line)"]
    lines = [f"# keep the installed torch {torch}", f"torch=={torch}"]
    want = matching_torchvision(torch)
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
