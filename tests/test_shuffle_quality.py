"""Shuffle-quality report: brute-force agreement, uniform permutations within 3σ of the analytic values, more
buffer / smaller segments never worse, determinism, and the CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from shardkit import write_shards

from pass_wds.cli import main as cli_main
from pass_wds.loading import EpochPlanner, PlanParams, make_loader
from pass_wds.loading.plan import shard_offsets
from pass_wds.loading.quality import (
    epoch_batches,
    plan_report,
    read_spans,
    report_from_batches,
    uniform_distinct,
)


def _equal_counts(n: int, shards: int) -> tuple[int, ...]:
    base, extra = divmod(n, shards)
    return tuple(base + (1 if i < extra else 0) for i in range(shards))


def _brute(first: np.ndarray, second: np.ndarray, offsets: np.ndarray) -> tuple[float, float, float]:
    """Distinct shards per batch, same-shard pair rate and recurrence, by plain loops over pairs."""
    shard = {g: int(np.searchsorted(offsets, g, side="right") - 1) for g in range(int(offsets[-1]))}
    later = {int(g): j for j, row in enumerate(second) for g in row}
    distinct, same, pairs, again, eligible = [], 0, 0, 0, 0
    for row in first.tolist():
        distinct.append(len({shard[g] for g in row}))
        for a, b in itertools.combinations(row, 2):
            pairs += 1
            same += shard[a] == shard[b]
            if a in later and b in later:
                eligible += 1
                again += later[a] == later[b]
    return float(np.mean(distinct)), same / pairs, again / eligible


def test_report_agrees_with_brute_force_on_a_small_plan() -> None:
    counts = (13, 7, 20, 5, 9)
    params = PlanParams(counts, seed=4, batch_size=4, segment_samples=3, shuffle_buffer_bytes=5)
    planner = EpochPlanner(params, sizes=lambda g: (g % 3 + 1).astype(np.int64))
    offsets = shard_offsets(counts)
    first, reads = epoch_batches(planner, 2, 2, 2)
    second, _ = epoch_batches(planner, 3, 2, 2)
    assert sorted(first.ravel().tolist()) == sorted(set(first.ravel().tolist()))  # each sample once
    report = plan_report(planner, 2, 2, epoch=2, footprint=np.full(sum(counts), 1024, dtype=np.int64))
    distinct, same_rate, recur = _brute(first, second, offsets)
    assert report.distinct_mean == pytest.approx(distinct)
    sizes = np.bincount(np.searchsorted(offsets, first.ravel(), side="right") - 1, minlength=len(counts))
    uniform_same = (sizes * (sizes - 1)).sum() / (sizes.sum() * (sizes.sum() - 1))
    assert report.same_shard_lift == pytest.approx(same_rate / uniform_same)
    assert report.recurrence == pytest.approx(recur)
    assert report.recurrence_uniform == pytest.approx(3 / (len(second) * 4 - 1))
    assert report.batches == len(first) == 2 * (sum(counts) // 8) and report.samples == first.size
    # reads: the reader's spans, consecutive increasing samples of one shard (gaps this small are read
    # through), each transferring everything from its first to its last sample
    spans = []
    for r in reads:
        start = prev = r[0]
        for g in r[1:].tolist() + [None]:
            same = g is not None and g > prev and _shard(offsets, g) == _shard(offsets, prev)
            if not same:
                spans.append((prev - start + 1) * 1024)
                start = g
            prev = g
    assert report.reads == len(spans) and report.read_mean_bytes == pytest.approx(np.mean(spans))
    assert report.read_amplification == pytest.approx(sum(spans) / (first.size * 1024))


def _shard(offsets: np.ndarray, g: int) -> int:
    return int(np.searchsorted(offsets, g, side="right") - 1)


def test_uniform_distinct_matches_the_formula_and_a_simulation() -> None:
    mean, sd = uniform_distinct(np.full(563, 2557), 256)
    assert mean == pytest.approx(563 * (1 - (1 - 1 / 563) ** 256), rel=2e-3)  # the 205.8
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(7), [30, 5, 100, 1, 64, 12, 40])
    sims = [len(set(rng.choice(labels, 16, replace=False).tolist())) for _ in range(4000)]
    mean, sd = uniform_distinct(np.bincount(labels), 16)
    assert abs(np.mean(sims) - mean) < 3 * sd / math.sqrt(len(sims))
    assert np.std(sims) == pytest.approx(sd, rel=0.06)


@pytest.mark.parametrize(
    "n,shards,b,seed",
    [(20_000, 40, 64, 0), (20_000, 40, 64, 1), (6_001, 7, 16, 2), (50_000, 563, 128, 3), (3_000, 300, 8, 4)],
)
def test_a_uniform_permutation_is_within_3_sigma_of_the_analytic_values(
    n: int, shards: int, b: int, seed: int
) -> None:
    counts = _equal_counts(n, shards)
    offsets = shard_offsets(counts)
    rng = np.random.default_rng(seed)
    nb = n // b
    first = rng.permutation(n)[: nb * b].reshape(nb, b)
    second = rng.permutation(n)[: nb * b].reshape(nb, b)
    r = report_from_batches(first, second, offsets)
    assert abs(r.distinct_mean - r.distinct_uniform) < 3 * r.distinct_sigma
    assert abs(r.recurrence - r.recurrence_uniform) < 3 * r.recurrence_sigma
    expected_same = nb * b * (b - 1) / 2 * (n / shards - 1) / (n - 1)  # same-shard pairs, about Poisson
    assert abs(r.same_shard_lift - 1) < 3 / math.sqrt(expected_same)
    # The planner with one-sample segments and no buffer plans exactly such a permutation.
    params = PlanParams(counts, seed=seed, batch_size=b, segment_samples=1, shuffle_buffer_bytes=0)
    p = plan_report(EpochPlanner(params, lambda g: np.ones(len(g), dtype=np.int64)), 2, 3)
    assert abs(p.distinct_mean - p.distinct_uniform) < 3 * p.distinct_sigma
    assert abs(p.recurrence - p.recurrence_uniform) < 3 * p.recurrence_sigma


def test_a_larger_buffer_or_smaller_segments_never_make_the_report_worse() -> None:
    counts = _equal_counts(24_000, 48)
    sizes = np.random.default_rng(1).integers(500, 1500, size=sum(counts))
    reports = {}
    for seg, buf in itertools.product((64, 16, 4, 1), (20_000, 80_000, 320_000)):
        params = PlanParams(counts, seed=7, batch_size=64, segment_samples=seg, shuffle_buffer_bytes=buf)
        reports[seg, buf] = plan_report(EpochPlanner(params, lambda g: sizes[g]), 2, 2)
    for (seg, buf), r in reports.items():
        for (seg2, buf2), r2 in reports.items():
            if (seg2, buf2) != (seg, buf) and seg2 <= seg and buf2 >= buf:  # r2 has the better settings
                assert r2.distinct_mean >= r.distinct_mean - 3 * r.distinct_sigma, ((seg, buf), (seg2, buf2))
                assert r2.recurrence <= r.recurrence + 3 * r.recurrence_sigma, ((seg, buf), (seg2, buf2))
                assert r2.same_shard_lift <= r.same_shard_lift * 1.05
    worst, best = reports[64, 20_000], reports[1, 320_000]
    assert worst.distinct_fraction < 0.5 and worst.recurrence_ratio > 5  # the grid spans a real range
    assert best.distinct_fraction > 0.95 and best.recurrence_ratio < 1.5


def test_read_spans_follow_the_reader_rule() -> None:
    offsets = shard_offsets((10, 10))
    fp = np.full(20, 1000, dtype=np.int64)
    fp[5] = 2 << 20  # a gap over this sample is too large to read through
    spans = read_spans([np.array([0, 1, 2, 4, 6, 9, 10, 11, 3])], offsets, fp)
    # 0-2 and 4 (gap of 1 kB read through) | 6 (gap holds the 2 MB sample) ... 9 | 10-11 (new shard) | 3
    assert spans.tolist() == [5000, 4000, 2000, 1000]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quality")
    write_shards(root, [40] * 12)
    return root


def test_loader_report_is_deterministic_and_matches_its_plan(shards: Path) -> None:
    kw = {"batch_size": 8, "num_workers": 2, "segment_samples": 8, "shuffle_buffer_bytes": 20_000}
    a = make_loader(str(shards), seed=3, world_size=2, rank=1, **kw).shuffle_report()
    b = make_loader(str(shards), seed=3, world_size=2, rank=0, **kw).shuffle_report()
    c = make_loader(str(shards), seed=4, world_size=2, rank=0, **kw).shuffle_report()
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    assert (a.world_size, a.num_workers, a.batch_size, a.batches) == (2, 2, 8, 2 * (480 // 16))
    other = make_loader(str(shards), seed=3, **kw).shuffle_report(world_size=2, num_workers=2)
    assert other.to_dict() == a.to_dict()  # another topology can be asked of any loader
    # Grouping by the JSON field that names the shard reproduces the shard figures.
    g = make_loader(str(shards), seed=3, **kw).shuffle_report(
        world_size=2, num_workers=2, group_by="json:shard"
    )
    (by_shard,) = g.groups
    assert by_shard.groups == 12 and by_shard.distinct_mean == pytest.approx(a.distinct_mean)
    assert by_shard.pair_lift == pytest.approx(a.same_shard_lift)
    assert a.read_amplification >= 1.0 and a.reads > 0


def test_cli_shuffle_report(shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = cli_main(
        ["shuffle-report", str(shards), "--batch-size", "8", "--world-size", "2", "--workers", "3",
         "--segment-samples", "4", "--json", str(out)]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0
    assert "distinct shards per batch" in text and "each image meets ~" in text and "uniform: " in text
    doc = json.loads(out.read_text())
    assert doc["world_size"] == 2 and doc["num_workers"] == 3 and doc["settings"]["segment_samples"] == 4
    for bad, message in [
        (["--world-size", "0"], "--world-size must be >= 1"),
        (["--group-by", "shard"], "group_by must be 'json:FIELD'"),
        (["--segment-samples", "0"], "segment_samples must be >= 1"),
    ]:
        rc = cli_main(["shuffle-report", str(shards), "--batch-size", "8", *bad])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    rc = cli_main(["shuffle-report", str(shards)])
    assert rc == 2 and "--batch-size is required" in capsys.readouterr().err
