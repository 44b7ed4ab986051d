"""Shared fixtures. Servers (moto S3, HTTP) live in tests/servers.py; corpus paths here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("PASS_WDS_CORPUS", REPO.parent / "shared" / "corpus"))


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared third-party corpus (photos, hard-images, foreign-shards); required, never rewritten."""
    if not (CORPUS / "photos").is_dir():
        pytest.fail(f"test corpus not found at {CORPUS} (set PASS_WDS_CORPUS)")
    return CORPUS


# Real loopback servers (moto S3, range-capable HTTP, fault proxy) for every test module.
pytest_plugins = ["servers"]
