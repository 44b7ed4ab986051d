"""Shared fixtures. Servers (moto S3, HTTP) live in tests/servers.py; test images here.

Two image sets: ``tests/data`` (bundled, always present: the basic cases) and the shared corpus at
``../shared/corpus`` or ``$PASS_WDS_CORPUS`` (optional: the extended cases). A test that uses the ``corpus``
fixture is marked ``corpus`` automatically; marked tests skip, with the reason, when the corpus is absent.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
CORPUS = Path(os.environ.get("PASS_WDS_CORPUS", REPO.parent / "shared" / "corpus"))
IMAGE_FOLDERS = ("photos", "hard-images")
# The quick subset (make test-quick): in-process unit modules, no S3/HTTP server processes, no torchrun;
# about 30 s together on 2 cores. Everything else runs in the full suite (make test, CI).
QUICK_MODULES = {
    "test_augment",
    "test_decoding",
    "test_format",
    "test_loading",
    "test_loading_state",
    "test_pins",
    "test_planning",
    "test_shuffle_quality",
    "test_sources",
    "test_storage",
    "test_storage_cache",
    "test_writing",
}


def corpus_present() -> bool:
    return (CORPUS / "photos").is_dir()


def cuda_present() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the quick modules ``quick`` and every user of the ``corpus`` fixture ``corpus``; skip tests marked
    ``corpus`` when the corpus is absent (the marker, not a failing fixture, says why), and tests marked
    ``cuda`` when there is no CUDA device."""
    skip = pytest.mark.skip(
        reason=f"extended case: needs the shared corpus at {CORPUS} (set PASS_WDS_CORPUS); tests/data covers the basics"
    )
    no_cuda = pytest.mark.skip(reason="needs a CUDA device (benchmarks/gpu_check.sh runs these on one)")
    has_cuda = None
    for item in items:
        if item.get_closest_marker("cuda"):
            has_cuda = cuda_present() if has_cuda is None else has_cuda
            if not has_cuda:
                item.add_marker(no_cuda)
        if item.path.stem in QUICK_MODULES:
            item.add_marker(pytest.mark.quick)
        if "corpus" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.corpus)
        if item.get_closest_marker("corpus") and not corpus_present():
            item.add_marker(skip)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``path`` (writes beyond it fail with ENOSPC, as on a full disk); the
    test skips, saying why, where mounting is not permitted (it needs root, as in CI's container)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def small_output(tmp_path_factory: pytest.TempPathFactory, shard_size: str, n_images: int = 40) -> Path:
    """A finished make-shards output of a small generated PASS-shaped set (for hosting/loading tests)."""
    import fakedata as fd

    from pass_wds import ConvertConfig, make_shards

    src = fd.make_fake_pass(
        fd.FakePassConfig(out=str(tmp_path_factory.mktemp("raw")), n_images=n_images, parts=2)
    )
    out = tmp_path_factory.mktemp("local") / "out"
    make_shards(
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
    """The shared third-party corpus (photos, hard-images, foreign-shards); never rewritten. Its users are
    marked ``corpus`` and skipped at collection when it is absent, so reaching here means it is present."""
    return CORPUS


@pytest.fixture(
    scope="session", params=[DATA, pytest.param(CORPUS, marks=pytest.mark.corpus)], ids=["bundled", "corpus"]
)
def image_root(request: pytest.FixtureRequest) -> Path:
    """A folder with ``photos/`` and ``hard-images/``: the bundled set, then (marked corpus) the whole corpus."""
    return Path(request.param)


def find_image(name: str, *, corpus: bool = False) -> Path:
    """``photos/`` or ``hard-images/`` file ``name``: from tests/data, or also the corpus when ``corpus``."""
    roots = [DATA, CORPUS] if corpus else [DATA]
    for root in roots:
        for folder in IMAGE_FOLDERS:
            if (root / folder / name).is_file():
                return root / folder / name
    hint = "" if corpus else " (bundle it in tests/data with its SOURCES.md row, or mark the test corpus)"
    raise FileNotFoundError(f"test image {name} not found in {', '.join(map(str, roots))}{hint}")


@pytest.fixture
def image_bytes(request: pytest.FixtureRequest) -> Callable[[str], bytes]:
    """Reads a test image by name: bundled ones always; corpus ones only in tests marked ``corpus`` (so an
    unmarked test cannot silently depend on files that a fresh clone lacks)."""
    marked = request.node.get_closest_marker("corpus") is not None
    return lambda name: find_image(name, corpus=marked).read_bytes()


# Real loopback servers (moto S3, range-capable HTTP, fault proxy) for every test module.
pytest_plugins = ["servers"]
