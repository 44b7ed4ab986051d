"""Which torch and torchvision work together, checked before torchvision is imported.

torchvision is compiled against one torch release (torchvision 0.M+15 goes with torch 2.M). A mismatched pair
fails deep inside torchvision's import (``operator torchvision::nms does not exist``, a 29-line traceback);
:func:`require_torch_pair` reads both versions from the installed package metadata first (no import, so
``make-shards`` and the torch-free commands never pay for it) and fails in one line naming both versions and
the command that fixes the pair. The range tested end to end is :data:`TESTED` (``scripts/check_torch_range.py``
installs its oldest and newest pair in a throwaway environment and runs pass-wds on each).
"""

from __future__ import annotations

import re
from importlib import metadata

from pass_wds.errors import PassWdsError

TESTED = (("2.13.0", "0.28.0"), ("2.14.1", "0.29.1"))
"""The oldest and newest torch/torchvision pairs tested (pyproject's lower bounds are the oldest)."""

_TORCH_INDEX = "https://download.pytorch.org/whl"


class TorchMismatchError(PassWdsError, ImportError):
    """The installed torch and torchvision were not built for each other; the message says how to fix it."""


def matching_torchvision(torch_version: str) -> str | None:
    """The torchvision release series (``0.28``) built for a torch version (``2.13.0+cpu``); None if unknown."""
    m = re.match(r"(\d+)\.(\d+)", torch_version)
    if not m or int(m[1]) != 2:
        return None
    return f"0.{int(m[2]) + 15}"


def _index_hint(torch_version: str) -> str:
    """pip's index option for the build of this torch: its local label names it (``+cpu``, ``+cu126``)."""
    label = torch_version.partition("+")[2]
    if label == "cpu" or re.fullmatch(r"cu\d+|rocm[\d.]+", label):
        return f" --index-url {_TORCH_INDEX}/{label}"
    return ""


def fix_command(torch_version: str) -> str:
    """The pip command that installs the torchvision built for the installed torch (keeping that torch)."""
    want = matching_torchvision(torch_version)
    base = torch_version.partition("+")[0]
    pair = f"'torch=={base}' 'torchvision=={want}.*'" if want else "torch torchvision"
    return f"pip install {pair}{_index_hint(torch_version)}"


def pair_problem(torch_version: str, torchvision_version: str) -> str | None:
    """One line saying why this pair cannot work together, or None when torchvision matches torch."""
    want = matching_torchvision(torch_version)
    got = re.match(r"(\d+\.\d+)", torchvision_version)
    if want is None or got is None or got[1] == want:
        return None
    return (
        f"torch {torch_version} and torchvision {torchvision_version} do not match (torch {torch_version} "
        f"needs torchvision {want}.x); install the pair together: {fix_command(torch_version)} "
        "(see docs/install.md)"
    )


def installed_versions() -> tuple[str, str] | None:
    """The installed torch and torchvision versions, from package metadata (nothing is imported)."""
    try:
        return metadata.version("torch"), metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return None


def require_torch_pair() -> None:
    """Refuse a mismatched torch/torchvision pair in one line (:class:`TorchMismatchError`) before torchvision
    is imported; a pair whose versions match but whose builds do not (torchvision's operators fail to load)
    is refused the same way when torchvision is imported here."""
    versions = installed_versions()
    if versions is None:
        return
    problem = pair_problem(*versions)
    if problem:
        raise TorchMismatchError(problem)
    try:
        import torchvision  # noqa: F401 - what fails for a mismatched build
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        torch_version, tv_version = versions
        raise TorchMismatchError(
            f"torchvision {tv_version} cannot load its compiled operators with torch {torch_version} "
            f"({str(e).splitlines()[0]}): they come from different builds; reinstall both from one index: "
            f"{fix_command(torch_version)} (see docs/install.md)"
        ) from None
