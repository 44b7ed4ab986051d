"""Shared fixtures. Servers (moto S3, HTTP) live in tests/servers.py; corpus paths here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("PASS_WDS_CORPUS", REPO.parent / "shared" / "corpus"))


def small_output(tmp_path_factory: pytest.TempPathFactory, shard_size: str, n_images: int = 40) -> Path:
    """A finished make-shards output of a small generated PASS-shaped set (for hosting/loading tests)."""
    import fakedata as fd

    from pass_wds.config import ConvertConfig
    from pass_wds.convert import run

    src = fd.make_fake_pass(
        fd.FakePassConfig(out=str(tmp_path_factory.mktemp("raw")), n_images=n_images, parts=2)
    )
    out = tmp_path_factory.mktemp("local") / "out"
    run(
        ConvertConfig(
            inputs=[str(t) for t in src.tars],
            metadata=str(src.metadata),
            output=str(out),
            shard_size=shard_size,
            progress=False,
        )
    )
    return out


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared third-party corpus (photos, hard-images, foreign-shards); required, never rewritten."""
    if not (CORPUS / "photos").is_dir():
        pytest.fail(f"test corpus not found at {CORPUS} (set PASS_WDS_CORPUS)")
    return CORPUS


# Real loopback servers (moto S3, range-capable HTTP, fault proxy) for every test module.
pytest_plugins = ["servers"]
