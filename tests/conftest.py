"""Shared fixtures. Servers (moto S3, HTTP) live in tests/servers.py; test images here.

Two image sets: ``tests/data`` (bundled, always present: the basic cases) and the shared corpus at
``../shared/corpus`` or ``$PASS_WDS_CORPUS`` (optional: the extended cases). A test that uses the ``corpus``
fixture is marked ``corpus`` automatically; marked tests skip, with the reason, when the corpus is absent.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pass_wds import fakedata as fd

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
CORPUS = Path(os.environ.get("PASS_WDS_CORPUS", REPO.parent / "shared" / "corpus"))
IMAGE_FOLDERS = ("photos", "hard-images")
# The quick subset (make test-quick): in-process unit modules, no S3/HTTP server processes, no torchrun;
# about 30 s together on 2 cores. Everything else runs in the full suite (make test, CI).
QUICK_MODULES = {
    "test_augment",
    "test_decoding",
    "test_errors",
    "test_format",
    "test_layout",
    "test_imaging",
    "test_loading",
    "test_loading_state",
    "test_pins",
    "test_options",
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


class FakeOutputs:
    """Fake PASS sets (:mod:`pass_wds.fakedata`) and their make-shards outputs, each built once per session for
    each distinct set of options and shared by every test that asks for the same: the suite's one "fake PASS,
    then convert" recipe. What it returns is read-only: a test that changes files copies them first, and
    :meth:`check_unchanged` (at the end of the session) fails the run if one did not."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._raw: dict[tuple[Any, ...], fd.FakePassResult] = {}
        self._out: dict[tuple[Any, ...], Path] = {}
        self._snapshots: dict[Path, list[tuple[str, int, int]]] = {}

    def raw(
        self, n_images: int = 40, parts: int = 2, seed: int = 0, bad: bool = False, workers: int = 1
    ) -> fd.FakePassResult:
        """``make_fake_pass`` with these options (``workers`` only changes how fast: the bytes are the same)."""
        key = (n_images, parts, seed, bad)
        if key not in self._raw:
            out = self._tmp.mktemp(f"raw-{n_images}-{parts}-{seed}{'-bad' if bad else ''}")
            cfg = fd.FakePassConfig(
                out=str(out), n_images=n_images, parts=parts, seed=seed, bad=bad, workers=workers
            )
            self._raw[key] = fd.make_fake_pass(cfg)
            self._snapshot(out)
        return self._raw[key]

    def output(
        self, raw: fd.FakePassResult, shard_size: str | int, *, brace: bool = False, **options: Any
    ) -> Path:
        """A finished make-shards output of ``raw`` (its tars and metadata) with ``shard_size`` and any other
        ConvertConfig ``options``; ``brace`` names the inputs as one ``PASS.{0..N}.tar`` pattern, as a user
        would (index.json records the inputs as given)."""
        key = (str(raw.metadata), str(shard_size), brace, tuple(sorted(options.items())))
        if key not in self._out:
            from pass_wds import ConvertConfig, make_shards

            d = raw.metadata.parent
            inputs = [f"{d}/PASS.{{0..{len(raw.tars) - 1}}}.tar"] if brace else [str(t) for t in raw.tars]
            out = self._tmp.mktemp("out") / "out"
            cfg = ConvertConfig(
                inputs=inputs,
                metadata=str(raw.metadata),
                output=str(out),
                shard_size=str(shard_size),
                **{"progress": False, **options},
            )
            make_shards(cfg)
            self._snapshot(out)
            self._out[key] = out
        return self._out[key]

    def small_output(self, shard_size: str, n_images: int = 40) -> Path:
        """A finished output of a small clean set (for hosting/loading tests)."""
        return self.output(self.raw(n_images=n_images), shard_size)

    def _snapshot(self, root: Path) -> None:
        self._snapshots[root] = _tree(root)

    def check_unchanged(self) -> None:
        changed = [str(root) for root, files in self._snapshots.items() if _tree(root) != files]
        assert not changed, f"a test changed shared fake-PASS files (copy them first): {changed}"


def _tree(root: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    )


@pytest.fixture(scope="session")
def fake_outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeOutputs]:
    """The session's :class:`FakeOutputs`."""
    outputs = FakeOutputs(tmp_path_factory)
    yield outputs
    outputs.check_unchanged()


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


MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
"""OS errors that are the machine's, not pass-wds's: the CLI reports them as they are (one line)."""


@pytest.fixture(autouse=True)
def cli_errors_are_one_line_from_the_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every error line any CLI run of a test prints (in this process or a subprocess that inherits the
    environment) is recorded by pass_wds.cli (``PASS_WDS_ERROR_LOG``); after the test, each must be one line
    from a ``PassWdsError`` subclass (or a full disk / read-only / failing device). So every CLI error path
    the suite exercises is checked, without a second copy of its setup."""
    from pass_wds.cli.common import ERROR_LOG

    log = tmp_path_factory.mktemp("cli-errors", numbered=True) / "errors.jsonl"
    old = os.environ.get(ERROR_LOG)
    os.environ[ERROR_LOG] = str(log)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ERROR_LOG, None)
        else:
            os.environ[ERROR_LOG] = old
    if not log.exists():
        return
    bad = []
    for line in log.read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        machine = e["errno"] in MACHINE_ERRNOS and not e["root"]
        if not (e["root"] or machine) or e["lines"] != 1:
            bad.append(f"{e['prog']}: {e['type']} ({e['lines']} lines, exit {e['rc']}): {e['message'][:120]}")
    assert not bad, "CLI errors that are not one line from a PassWdsError subclass:\n" + "\n".join(bad)


# Real loopback servers (moto S3, range-capable HTTP, fault proxy) for every test module.
pytest_plugins = ["servers"]
