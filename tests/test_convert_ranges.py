"""Shard tasks are independent: running the plan as parallel --shard-range tasks (a Slurm array) and then
finishing once gives exactly the output of one uninterrupted run."""

from __future__ import annotations

import filecmp
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import FakeOutputs

from pass_wds import ConvertConfig, make_shards
from pass_wds import fakedata as fd
from pass_wds.config import ConfigError


@pytest.fixture(scope="module")
def src(fake_outputs: FakeOutputs) -> fd.FakePassResult:
    return fake_outputs.raw(n_images=240, seed=5)


def _cfg(src: fd.FakePassResult, out: Path, **kw: object) -> ConvertConfig:
    d = src.metadata.parent
    return ConvertConfig(
        inputs=[f"{d}/PASS.{{0..1}}.tar"],
        metadata=str(src.metadata),
        output=str(out),
        shard_size="1MB",
        seed=9,
        **kw,  # type: ignore[arg-type]
    )


def test_shard_ranges_then_finish_equal_one_run(src: fd.FakePassResult, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    make_shards(_cfg(src, whole))
    n = len(list(whole.glob("pass-*.tar")))
    assert n >= 6
    split = tmp_path / "split"
    ranges = [f"{a}:{min(a + 3, n)}" for a in range(0, n, 3)]
    with ThreadPoolExecutor(len(ranges)) as pool:  # the tasks of an array run concurrently
        parts = list(pool.map(lambda r: make_shards(_cfg(src, split, shard_range=r)), ranges))
    assert sum(p.shards for p in parts) == n
    assert not (split / "index.json").exists()  # only the finishing run writes the manifest
    final = make_shards(_cfg(src, split))
    assert final.shards_resumed == n
    names = sorted(p.name for p in whole.iterdir())
    assert names == sorted(p.name for p in split.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(
        whole, split, [x for x in names if x != "stats.json"], shallow=False
    )
    assert not mismatch and not errors, (mismatch, errors)


def test_shard_range_validation(src: fd.FakePassResult, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="START:END"):
        make_shards(_cfg(src, tmp_path / "a", shard_range="5:2"))
    with pytest.raises(ConfigError, match="outside the plan"):
        make_shards(_cfg(src, tmp_path / "b", shard_range="0:100000"))
