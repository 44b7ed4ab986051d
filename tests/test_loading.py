"""Loader in one process: planning properties, shuffle bounds, resume chains, foreign shards, errors, HTTP."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import webdataset as wds
from shardkit import TinyRecipe, all_keys, jpeg_bytes, write_shards

from pass_wds.augment import CallableRecipe
from pass_wds.config import ConfigError
from pass_wds.loading import (
    EpochJob,
    EpochPlanner,
    Generation,
    LoaderConfig,
    PlannedSamples,
    PlanParams,
    SampleError,
    ShardError,
    make_loader,
    shuffle_order,
)

COUNTS = [13, 7, 20, 5, 1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, COUNTS)
    return root


def _keys(loader: Any) -> list[list[str]]:
    return [b["__key__"] for b in loader]


# ----------------------------------------------------------------------------------------------- planning


@pytest.mark.parametrize(
    "counts,ws,workers,bs,remainder",
    [
        ([13, 7, 20, 5, 1], 2, 2, 3, "drop"),
        ([13, 7, 20, 5, 1], 3, 4, 2, "pad"),
        ([5], 4, 3, 1, "drop"),  # one shard, 12 readers
        ([2, 1], 2, 2, 2, "pad"),  # fewer samples than readers
        ([100, 3, 0, 40], 5, 1, 7, "drop"),
    ],
)
def test_plan_partitions_every_epoch_exactly(
    counts: list[int], ws: int, workers: int, bs: int, remainder: str
) -> None:
    params = PlanParams(
        tuple(counts), seed=3, batch_size=bs, remainder=remainder, segment_samples=4, shuffle_buffer_bytes=5
    )
    planner = EpochPlanner(params, sizes=lambda g: (g % 3 + 1).astype(np.int64))
    total = sum(counts)
    for epoch in (0, 1):
        plan = planner.generations(epoch, (Generation(ws, workers),))[0]
        delivered = []
        for rank in range(ws):
            rank_batches = 0
            for w in range(workers):
                order = planner.worker_order(plan, rank, w)
                assert len(order) % bs == 0
                rank_batches += len(order) // bs
                delivered.extend(plan.sequence[plan.base[order]].tolist())
            assert rank_batches == plan.batches_per_rank
        g = ws * bs
        if remainder == "drop":
            assert len(delivered) == total - total % g == len(set(delivered))
            assert sorted(delivered + plan.sequence[plan.dropped].tolist()) == list(range(total))
        else:
            assert set(delivered) == set(range(total)) and len(delivered) == -(-total // g) * g


def test_same_seed_same_plan_other_epoch_or_seed_other_plan() -> None:
    def seq(seed: int, epoch: int) -> list[int]:
        p = PlanParams(tuple(COUNTS), seed=seed, batch_size=2, segment_samples=3)
        planner = EpochPlanner(p, sizes=lambda g: np.ones(len(g), dtype=np.int64))
        plan = planner.generations(epoch, (Generation(2, 2),))[0]
        return plan.sequence[plan.base[planner.worker_order(plan, 0, 1)]].tolist()

    assert seq(1, 4) == seq(1, 4)
    assert seq(1, 4) != seq(1, 5) and seq(1, 4) != seq(2, 4)


def test_shuffle_order_is_bounded_deterministic_and_mixes() -> None:
    sizes = np.random.default_rng(0).integers(1, 100, size=500)
    a = shuffle_order(sizes, 1000, np.random.default_rng(7))
    assert sorted(a.tolist()) == list(range(500))
    assert a.tolist() == shuffle_order(sizes, 1000, np.random.default_rng(7)).tolist()
    assert a.tolist() != list(range(500))
    # Replay: a sample is held from its arrival until its emission; the bytes held never exceed the bound.
    emit_at = {int(v): t for t, v in enumerate(a)}
    for t in range(0, 500, 7):
        held = sum(int(sizes[i]) for i in range(500) if i <= max(t, 0) and emit_at[i] > t)
        assert held <= 1000 + int(sizes.max())
    assert shuffle_order(sizes, 0, np.random.default_rng(1)).tolist() == list(range(500))


# ------------------------------------------------------------------------------------------- epochs, resume


def test_epoch_covers_all_but_a_rotating_remainder(shards: Path) -> None:
    loader = make_loader(str(shards / "index.json"), batch_size=4, num_workers=2, segment_samples=4)
    assert len(loader) == 46 // 4
    dropped = []
    for epoch in range(3):
        keys = [k for b in _keys(loader) for k in b]
        assert loader.epoch == epoch + 1  # a finished epoch advances by itself
        assert len(keys) == len(set(keys)) == 44
        assert sorted(keys + loader.dropped_keys) == sorted(all_keys(COUNTS))
        dropped.append(tuple(loader.dropped_keys))
    assert len(set(dropped)) == 3


def test_dropped_samples_rotate_even_with_one_segment(tmp_path: Path) -> None:
    write_shards(tmp_path, [10])
    loader = make_loader(str(tmp_path / "index.json"), batch_size=3, num_workers=0, segment_samples=100)
    dropped = set()
    for _ in range(6):
        keys = [k for b in _keys(loader) for k in b]
        assert len(keys) == 9 and sorted(keys + loader.dropped_keys) == all_keys([10])
        dropped.add(loader.dropped_keys[0])
    assert len(dropped) >= 3


def test_interrupted_iteration_continues_and_state_resumes_identically(shards: Path) -> None:
    src = str(shards / "index.json")
    kw: dict[str, Any] = {
        "batch_size": 3,
        "num_workers": 2,
        "segment_samples": 4,
        "seed": 5,
        "shuffle_buffer_bytes": 3000,
    }
    full = make_loader(src, **kw)
    full.set_epoch(2)
    reference = _keys(full)
    part = make_loader(src, **kw)
    part.set_epoch(2)
    got = [b["__key__"] for b in itertools.islice(part, 4)]
    state = part.state_dict()
    assert state["generations"] == [[1, 2, 4]] and state["epoch"] == 2
    fresh = make_loader(src, **kw)
    fresh.load_state_dict(json.loads(json.dumps(state)))
    fresh.set_epoch(2)  # the usual training-loop call must not lose the position
    assert len(fresh) == len(reference) - 4
    assert got + _keys(fresh) == reference
    assert got + _keys(part) == reference  # the interrupted loader itself also continues
    assert fresh.state_dict()["epoch"] == 3


def test_resume_chain_across_topologies_covers_rest_once(shards: Path) -> None:
    src = str(shards / "index.json")
    kw: dict[str, Any] = {"batch_size": 2, "segment_samples": 3, "seed": 9}
    # 2 ranks × 2 workers deliver 3 batches each; then 3 ranks × 1 worker deliver 2; then 1 rank × 3 workers.
    first = [make_loader(src, rank=r, world_size=2, num_workers=2, **kw) for r in range(2)]
    seen = [k for ld in first for b in itertools.islice(ld, 3) for k in b["__key__"]]
    state = first[0].state_dict()
    assert state == first[1].state_dict()
    second = [make_loader(src, rank=r, world_size=3, num_workers=0, **kw) for r in range(3)]
    for ld in second:
        ld.load_state_dict(state)
    seen += [k for ld in second for b in itertools.islice(ld, 2) for k in b["__key__"]]
    state2 = second[0].state_dict()
    assert state2["generations"] == [[2, 2, 3], [3, 1, 2]]
    last = make_loader(src, rank=0, world_size=1, num_workers=3, **kw)
    last.load_state_dict(state2)
    rest = [k for b in _keys(last) for k in b]
    assert len(seen) == len(set(seen)) and not set(seen) & set(rest) and len(rest) == len(set(rest))
    everything = set(all_keys(COUNTS))
    # 46 samples: 46 % 4 = 2 dropped by the first plan, 12 delivered; of the 32 left 32 % 6 = 2 dropped by the
    # second, 12 delivered; the last 18 fit world size 1 exactly.
    dropped = first[0].dropped_keys + second[0].dropped_keys
    assert len(first[0].dropped_keys) == 2 and len(second[0].dropped_keys) == 2 and last.dropped_keys == []
    assert len(seen) == 24 and len(rest) == 18
    assert sorted(seen + rest + dropped) == sorted(everything)


def test_state_of_other_data_or_settings_is_refused(shards: Path) -> None:
    src = str(shards / "index.json")
    a = make_loader(src, batch_size=2, num_workers=0, seed=1)
    b = make_loader(src, batch_size=2, num_workers=0, seed=2)
    with pytest.raises(ValueError, match="different shards or settings"):
        b.load_state_dict(a.state_dict())


def test_resampled_mode(shards: Path) -> None:
    src = str(shards / "index.json")
    loader = make_loader(src, batch_size=5, num_workers=0, epoch_samples=60, segment_samples=4)
    assert len(loader) == 12
    e0 = [k for b in _keys(loader) for k in b]
    e1 = [k for b in _keys(loader) for k in b]
    assert len(e0) == len(e1) == 60 and e0 != e1
    assert set(e0) <= set(all_keys(COUNTS)) and max(Counter(e0).values()) >= 2
    again = make_loader(src, batch_size=5, num_workers=0, epoch_samples=60, segment_samples=4)
    assert [k for b in _keys(again) for k in b] == e0


def test_shuffle_buffer_peak_is_bounded(shards: Path) -> None:
    loader = make_loader(
        str(shards / "index.json"), batch_size=2, num_workers=0, shuffle_buffer_bytes=3000, segment_samples=50
    )
    _keys(loader)
    largest = max(len(jpeg_bytes(i)) + 60 for i in range(46))
    assert 0 < loader.stats.peak_buffer_bytes <= 3000 + largest


def test_no_shuffle_reads_in_shard_order(shards: Path) -> None:
    loader = make_loader(str(shards / "index.json"), batch_size=2, num_workers=0, shuffle=False)
    assert [k for b in _keys(loader) for k in b] == all_keys(COUNTS)[:46]


# ------------------------------------------------------------------------------------- decode and errors


def test_recipe_batches_and_json(shards: Path) -> None:
    loader = make_loader(
        str(shards / "index.json"), batch_size=4, num_workers=2, recipe=TinyRecipe(size=8, views=2)
    )
    batch = next(iter(loader))
    assert [v.shape for v in batch["views"]] == [(4, 3, 8, 8)] * 2
    assert all(v.dtype.is_floating_point is False for v in batch["views"])
    for key, meta in zip(batch["__key__"], batch["json"], strict=True):
        assert key == f"s{meta['shard']:03d}_{meta['i']:05d}"


def _bad_first(shard: int, i: int) -> bytes:
    return b"\xff\xd8\xff\xe0 not a jpeg" if (shard, i) == (0, 1) else jpeg_bytes(i)


def test_on_error_raise_and_substitute(tmp_path: Path) -> None:
    write_shards(tmp_path, [8], image=_bad_first)
    src = str(tmp_path / "index.json")
    with pytest.raises(SampleError, match="s000_00001"):
        _keys(make_loader(src, batch_size=4, num_workers=0, recipe=TinyRecipe(), on_error="raise"))
    loader = make_loader(src, batch_size=4, num_workers=0, recipe=TinyRecipe())
    keys = [k for b in _keys(loader) for k in b]
    assert len(keys) == 8 and "s000_00001" not in keys
    assert loader.stats.errors == 1 and loader.stats.bad[0]["key"] == "s000_00001"
    # a vocabulary word (TinyRecipe decodes with Pillow itself: an OSError is "failed", named in the detail)
    assert loader.stats.bad[0]["reason"] == "failed" and loader.stats.bad[0]["detail"].startswith("OSError: ")


def test_stale_idx_is_detected(tmp_path: Path) -> None:
    write_shards(tmp_path / "a", [6])
    write_shards(tmp_path / "b", [6], image=lambda s, i: jpeg_bytes(i, size=(40, 30)))
    shutil.copy(tmp_path / "a" / "shard-000000.idx", tmp_path / "b" / "shard-000000.idx")
    with pytest.raises(ShardError, match="stale|does not match"):
        _keys(make_loader(str(tmp_path / "b" / "index.json"), batch_size=2, num_workers=0))


# ------------------------------------------------------------------------------------------ foreign shards


def test_upstream_shardwriter_shards_without_idx(tmp_path: Path) -> None:
    pattern = str(tmp_path / "up-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=7, verbose=0) as sink:
        for i in range(17):
            sink.write({"__key__": f"k{i:03d}", "jpg": jpeg_bytes(i), "json": {"i": i}})
    src = str(tmp_path / "up-{000000..000002}.tar")
    loader = make_loader(src, batch_size=3, num_workers=2, recipe=TinyRecipe(), remainder="pad")
    batches = list(loader)
    keys = [k for b in batches for k in b["__key__"]]
    assert set(keys) == {f"k{i:03d}" for i in range(17)} and len(keys) == 18
    assert all(b["json"][j]["i"] == int(k[1:]) for b in batches for j, k in enumerate(b["__key__"]))


IMAGE_SHARDS = {
    "clipretrieval__image1.tar": 4,
    "clipretrieval__image2.tar": 3,
    "pillow__hopper.tar": 1,
    "aistore__single-png-cls.tar": 1,
    "webdataset__sample.tgz": 90,
}
OTHER_SHARDS = {
    "webdataset__mpdata.tar": 100,
    "webdataset__testgz.tar": 1000,
    "lhotse__recording.000000.tar": 2,
}


def test_foreign_image_shards(corpus: Path) -> None:
    urls = [str(corpus / "foreign-shards" / n) for n in IMAGE_SHARDS]
    loader = make_loader(urls, batch_size=3, num_workers=2, recipe=TinyRecipe(), segment_samples=8)
    assert len(loader) == sum(IMAGE_SHARDS.values()) // 3
    keys = [k for b in loader for k in b["__key__"]]
    assert len(keys) == len(set(keys))
    assert loader.stats.errors == 0
    assert "tar-single/0001" in keys + loader.dropped_keys and "hopper" in keys + loader.dropped_keys
    assert len(keys) + len(loader.dropped_keys) == sum(IMAGE_SHARDS.values())


def test_foreign_non_image_shards_raw_or_clear_error(corpus: Path) -> None:
    for name, n in OTHER_SHARDS.items():
        url = str(corpus / "foreign-shards" / name)
        with pytest.raises(ShardError, match="no image members"):
            make_loader(url, batch_size=1, num_workers=0, recipe=TinyRecipe())
        raw = make_loader(url, batch_size=1, num_workers=0)
        keys = [k for b in raw for k in b["__key__"]]
        assert len(keys) == len(set(keys)) == n
    raw = make_loader(str(corpus / "foreign-shards" / "webdataset__mpdata.tar"), batch_size=4, num_workers=0)
    batch = next(iter(raw))
    assert isinstance(batch["mp"][0], bytes) and batch["json"] == [{}] * 4


# ------------------------------------------------------------------------------------- stages, config, HTTP


def test_planned_samples_compose_with_webdataset_pipeline(shards: Path) -> None:
    loader = make_loader(str(shards / "index.json"), batch_size=4, num_workers=0)
    job = EpochJob(loader.shards, loader.params, epoch=0, history=(Generation(1, 1),), rank=0)
    pipeline = wds.DataPipeline(
        PlannedSamples(job), wds.map(lambda s: s["__key__"]), wds.batched(4, collation_fn=list, partial=False)
    )
    assert list(pipeline) == _keys(loader)


def test_loader_config_yaml(tmp_path: Path, shards: Path) -> None:
    path = tmp_path / "loader.yaml"
    path.write_text(
        f"source: {shards / 'index.json'}\nbatch_size: 5\nnum_workers: 0\nshuffle_buffer_bytes: 1MB\n"
    )
    cfg = LoaderConfig.from_yaml(path)
    assert cfg.batch_size == 5 and len(cfg.build()) == 46 // 5
    path.write_text("source: x\nbatch_sise: 5\n")
    with pytest.raises(ConfigError, match="batch_sise"):
        LoaderConfig.from_yaml(path)
    shipped = LoaderConfig.from_yaml(Path(__file__).resolve().parent.parent / "configs" / "loader.yaml")
    assert shipped.remainder in ("drop", "pad")


def test_huge_resampled_epoch_is_refused_not_planned(shards: Path) -> None:
    """A resampled epoch is planned in memory: an absurd size fails at once instead of killing the workers."""
    with pytest.raises(ConfigError, match="epoch_samples=1,000,000,000 is too large"):
        LoaderConfig(source=str(shards / "index.json"), epoch_samples=10**9).build()


def test_resampled_epoch_smaller_than_one_global_batch_is_refused(shards: Path) -> None:
    """epoch_samples below batch_size x world_size with remainder drop would give every epoch zero batches."""
    src = str(shards / "index.json")
    with pytest.raises(
        ConfigError, match=r"epoch_samples \(10\) cannot fill one batch of 4 on each of 4 ranks"
    ):
        make_loader(src, batch_size=4, num_workers=0, epoch_samples=10, rank=1, world_size=4)
    with pytest.raises(ConfigError, match=r"^46 samples cannot fill one batch of 12 on each of 4 ranks"):
        make_loader(src, batch_size=12, num_workers=0, world_size=4, rank=0)
    fits = make_loader(src, batch_size=4, num_workers=0, epoch_samples=16, rank=1, world_size=4)
    assert len(fits) == 1 and [len(k) for k in _keys(fits)] == [4]
    padded = make_loader(
        src, batch_size=4, num_workers=0, epoch_samples=10, rank=1, world_size=4, remainder="pad"
    )
    assert [len(k) for k in _keys(padded)] == [4]


def test_make_loader_takes_exactly_the_loader_config_fields(shards: Path) -> None:
    """make_loader's options are LoaderConfig's fields, validated there: every field works, others are refused."""
    src = str(shards / "index.json")
    defaults = {f.name: getattr(LoaderConfig(), f.name) for f in dataclasses.fields(LoaderConfig)}
    options = {k: v for k, v in defaults.items() if k not in ("source", "batch_size", "recipe")}
    loader = make_loader(src, batch_size=3, **{**options, "num_workers": 0, "storage_options": None})
    assert {**dataclasses.asdict(loader.config), "num_workers": 4} == {
        **defaults,
        "source": src,
        "batch_size": 3,
        "recipe": None,
    }
    with pytest.raises(ConfigError, match="unknown option.*num_worker"):
        make_loader(src, batch_size=3, num_worker=0)
    with pytest.raises(ConfigError, match="num_workers must be >= 0"):
        make_loader(src, batch_size=3, num_workers=-1)
    assert isinstance(
        make_loader(src, batch_size=3, num_workers=0, recipe=TinyRecipe()).recipe, CallableRecipe
    )


def test_http_shards_resume_seeks_with_idx(tmp_path: Path) -> None:
    from servers import HttpServer

    root = tmp_path / "www"
    write_shards(root, [40], image=lambda s, i: jpeg_bytes(i, size=(96, 64)))
    server = HttpServer(root).start()
    try:
        src = f"{server.url}/index.json"
        kw: dict[str, Any] = {"batch_size": 4, "num_workers": 0, "shuffle": False}
        first = make_loader(src, **kw)
        head = [b["__key__"] for b in itertools.islice(first, 8)]
        state = first.state_dict()
        before = len(server.requests)
        resumed = make_loader(src, **kw)
        resumed.load_state_dict(state)
        rest = _keys(resumed)
        assert head + rest == [all_keys([40])[i : i + 4] for i in range(0, 40, 4)]
        idx_lines = (root / "shard-000000.idx").read_text().splitlines()
        first_needed = int(idx_lines[1 + 32].split()[1]) - 512  # sample 32 is the first not yet seen
        starts = [
            int(r.split("=")[1].split("-")[0])
            for m, p, r in server.requests[before:]
            if m == "GET" and p.endswith(".tar") and r
        ]
        assert starts and min(starts) >= first_needed
    finally:
        server.stop()


def test_gzipped_foreign_shard_resumes_identically(corpus: Path) -> None:
    src = str(corpus / "foreign-shards" / "webdataset__sample.tgz")
    kw: dict[str, Any] = {"batch_size": 5, "num_workers": 2, "segment_samples": 7, "recipe": TinyRecipe()}
    full = _keys(make_loader(src, **kw))
    assert len(full) == 18 and sorted(k for b in full for k in b) == [str(i) for i in range(10, 100)]
    part = make_loader(src, **kw)
    head = [b["__key__"] for b in itertools.islice(part, 7)]
    resumed = make_loader(src, **kw)
    resumed.load_state_dict(part.state_dict())
    assert head + _keys(resumed) == full


def test_raw_mode_keeps_sample_with_unparsable_json(tmp_path: Path) -> None:
    with wds.TarWriter(str(tmp_path / "j.tar")) as sink:
        for i in range(4):
            sink.write(
                {"__key__": f"k{i}", "jpg": jpeg_bytes(i), "json": b"{broken" if i == 2 else b'{"i": 1}'}
            )
    loader = make_loader(str(tmp_path / "j.tar"), batch_size=4, num_workers=0, shuffle=False)
    (batch,) = list(loader)
    assert batch["json"] == [{"i": 1}, {"i": 1}, {}, {"i": 1}] and batch["json_raw"][2] == b"{broken"
    assert loader.stats.errors == 1 and loader.stats.bad[0]["reason"] == "bad-json"


def test_parse_idx_formats_and_errors() -> None:
    from pass_wds.format.idx import parse_idx

    named = parse_idx("v1.2 1\njpg 512 10 a/k.jpg json 1024 5 a/k.json cls 2048 1 a/k.cls\n")
    assert named.keys == ["a/k"] and [m.ext for m in named.members[0]] == ["jpg", "json", "cls"]
    unnamed = parse_idx("v1.2 2\njpg 512 10 json 1024 5\npng 2048 3\n")
    assert [[(m.ext, m.offset, m.size) for m in ms] for ms in unnamed.members] == [
        [("jpg", 512, 10), ("json", 1024, 5)],
        [("png", 2048, 3)],
    ]
    with pytest.raises(ShardError, match="header says 2"):
        parse_idx("v1.2 2\njpg 512 10 k.jpg\n", "x.idx")
    with pytest.raises(ShardError, match="not a DALI"):
        parse_idx("v1.1 1\njpg 512 10\n", "x.idx")
    with pytest.raises(ShardError, match="non-integer"):
        parse_idx("v1.2 1\njpg 5x2 10 k.jpg\n", "x.idx")


def _pid_recipe(data: bytes, ext: str, rng: np.random.Generator) -> dict[str, Any]:
    import os

    import torch

    return {"image": torch.zeros(1), "pid": os.getpid()}


def test_persistent_workers_keep_processes_and_order_across_epochs(shards: Path) -> None:
    src = str(shards / "index.json")
    kw: dict[str, Any] = {"batch_size": 3, "num_workers": 2, "segment_samples": 4, "seed": 9}
    live = make_loader(src, recipe=_pid_recipe, **kw)
    fresh = make_loader(src, recipe=_pid_recipe, persistent_workers=False, **kw)
    pids: list[set[int]] = []
    previous: list[list[str]] = []
    for epoch in range(3):
        live.set_epoch(epoch)
        fresh.set_epoch(epoch)
        a, b = list(live), list(fresh)
        assert [x["__key__"] for x in a] == [x["__key__"] for x in b]  # the same plan reaches the workers
        pids.append({p for x in a for p in x["pid"]})
        if epoch:
            assert [x["__key__"] for x in a] != previous  # and it is the new epoch's plan
        previous = [x["__key__"] for x in a]
    assert len(pids[0]) == 2 and pids[0] == pids[1] == pids[2]  # the same two processes served every epoch
    # a resumed position also reaches the running workers
    part = list(itertools.islice(live, 2))
    state = live.state_dict()
    live.load_state_dict(state)
    rest = list(live)
    fresh.set_epoch(3)
    assert [x["__key__"] for x in part + rest] == [x["__key__"] for x in fresh]


def test_batched_sample_streams_are_numpys_default_rng() -> None:
    """The per-sample augmentation streams, seeded for a whole batch at once, are the streams of
    ``default_rng([*prefix, q, *suffix])`` draw for draw (edge words and numpy's own path for larger values)."""
    from pass_wds.loading.rngs import batch_generators

    rng = np.random.default_rng(11)
    cases = [([0, 0, 0], [0, 1, 2**32 - 1], [0, 0xA06]), ([2**32 - 1] * 3, [7], [1, 2**32 - 1])]
    cases += [
        ([int(x) for x in rng.integers(0, 2**32, 3)], [int(x) for x in rng.integers(0, 2**32, 9)], [0, 1])
    ]
    cases += [([2**40, 1, 2], [3, 4], [0, 5]), ([1], [2, 3], [4])]  # two words; short entropy: numpy's path
    for prefix, qs, suffix in cases:
        got = batch_generators(prefix, qs, suffix)
        assert len(got) == len(qs)
        for q, g in zip(qs, got, strict=True):
            want = np.random.default_rng([*prefix, q, *suffix])
            assert g.bit_generator.state == want.bit_generator.state
            assert g.integers(0, 1000, 5).tolist() == want.integers(0, 1000, 5).tolist()
            assert g.random() == want.random()
