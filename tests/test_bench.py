"""Smoke tests of ``pass-wds bench`` on tiny shards: it runs, prints every field, writes its JSON, and says
clearly when CUDA is asked for but absent. No performance assertions (those live in benchmarks/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FakeOutputs

from pass_wds import cli


@pytest.fixture(scope="module")
def shards(fake_outputs: FakeOutputs) -> str:
    return str(fake_outputs.output(fake_outputs.raw(n_images=24, parts=1), "200KB") / "index.json")


def _bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = cli.main(["bench", *args])
    return rc, capsys.readouterr().out


@pytest.mark.parametrize(
    ("recipe", "workers", "stages"),
    [
        ("simclr", "1", ["read (tar via .idx)", "decode (full, RGB)", "worker side (recipe)", "collate", "device stage (cpu)"]),
        ("decode", "0", ["read (tar via .idx)", "decode (full, RGB)", "worker side (recipe)", "collate"]),
        ("none", "0", ["read (tar via .idx)", "decode (full, RGB)"]),
    ],
)  # fmt: skip
def test_bench_prints_throughput_and_stages(
    shards: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recipe: str,
    workers: str,
    stages: list[str],
) -> None:
    out_json = tmp_path / "bench.json"
    args = [shards, "--recipe", recipe, "--workers", workers, "--batch-size", "4", "--batches", "3"]
    args += ["--profile-samples", "8", "--json", str(out_json)]
    if recipe == "simclr":
        args += ["--device", "cpu"]
    rc, out = _bench(capsys, *args)
    assert rc == 0, out
    assert f"recipe {recipe}" in out
    assert "images/s" in out and "MB/s" in out and "time to first batch" in out
    for stage in stages:
        assert stage in out, (stage, out)
    result = json.loads(out_json.read_text())
    assert result["images"] == 12  # 3 timed batches of 4
    assert result["images_per_s"] > 0 and result["mb_per_s"] > 0 and result["first_batch_s"] > 0
    assert result["mean_sample_bytes"] > 1000  # JPEG + JSON of each sample
    assert sorted(result["stages"]) == sorted(stages)
    assert result["profiled"] == 8
    assert all(s["ms_per_image"] > 0 for s in result["stages"].values())


def test_bench_cuda(shards: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = [shards, "--recipe", "eval", "--workers", "0", "--batch-size", "4", "--batches", "2"]
    rc, out = _bench(capsys, *args, "--device", "cuda")
    assert rc == 0
    if torch.cuda.is_available():
        assert "device stage (cuda)" in out
    else:
        assert out.strip() == "skipped: no CUDA device"


def test_bench_rejects_bad_numbers(shards: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["bench", shards, "--batches", "0"])
    err = capsys.readouterr().err  # an error line goes to stderr, as every command's does (issue 17)
    assert rc == 2
    assert "--batches" in err and err.count("\n") == 1


def test_bench_decode_device_on_the_cpu_and_bad_combinations(
    shards: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "bench.json"
    args = [shards, "--recipe", "simclr", "--workers", "1", "--batch-size", "4", "--batches", "2"]
    args += ["--profile-samples", "8", "--decode", "device", "--device", "cpu", "--json", str(out_json)]
    rc, out = _bench(capsys, *args)
    assert rc == 0, out
    result = json.loads(out_json.read_text())
    assert result["config"]["decode"] == "device" and result["images"] == 8
    assert {"worker side (recipe)", "collate", "device stage (cpu)"} <= set(result["stages"])
    for extra, message in (
        (["--recipe", "simclr", "--decode", "device"], "needs device="),
        (["--recipe", "decode", "--decode", "fast"], "--decode applies to augmentation recipes"),
    ):
        rc = cli.main(["bench", shards, "--batches", "1", *extra])
        captured = capsys.readouterr()
        assert rc == 2 and message in captured.err + captured.out, captured
