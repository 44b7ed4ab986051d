"""Loader under real torchrun (2 processes × 2 DataLoader workers, gloo): exact, even, deterministic, resumable."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from shardkit import all_keys, jpeg_bytes, write_shards

from pass_wds.loading import make_loader

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "ddp" / "run_loader.py"
MAIN = [13, 7, 20, 5, 1]  # unequal shards, 46 samples
BAD = {(0, 2), (1, 5), (1, 6)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(spec: list[dict[str, Any]], out: Path, nproc: int = 2) -> dict[str, list[dict[str, Any]]]:
    """Run the scenarios under torchrun; returns {scenario name: [rank 0 result, rank 1 result, …]}."""
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(spec_file), str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return {
        sc["name"]: [json.loads((out / f"{sc['name']}.rank{r}.json").read_text()) for r in range(nproc)]
        for sc in spec
    }


def _truncated(shard: int, i: int) -> bytes:
    data = jpeg_bytes(shard * 100 + i, size=(64, 48))
    return data[: len(data) // 2] if (shard, i) in BAD else data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ddp")
    write_shards(root / "main", MAIN)
    write_shards(root / "few", [3, 2])
    write_shards(root / "one", [3])
    write_shards(root / "bad", [12, 12], image=_truncated)  # 24 = 3 × (2 ranks × 4): nothing dropped
    base = {"num_workers": 2, "segment_samples": 4, "shuffle_buffer_bytes": 4000}
    spec = [
        {**base, "name": "main", "source": str(root / "main" / "index.json"), "batch_size": 3, "epochs": [0, 1, 2]},
        {**base, "name": "pad", "source": str(root / "main" / "index.json"), "batch_size": 4, "remainder": "pad",
         "epochs": [0]},
        {**base, "name": "few", "source": str(root / "few" / "index.json"), "batch_size": 1, "epochs": [0, 1]},
        {**base, "name": "one", "source": str(root / "one" / "index.json"), "batch_size": 2, "remainder": "pad",
         "epochs": [0]},
        {**base, "name": "bad", "source": str(root / "bad" / "index.json"), "batch_size": 4, "recipe": "tiny",
         "epochs": [0]},
    ]  # fmt: skip
    results = torchrun(spec, root / "run1")
    return {"root": root, "results": results, "base": base}


def _epoch_keys(res: list[dict[str, Any]], epoch: int) -> list[list[str]]:
    """Keys each rank saw in ``epoch`` (flattened per rank)."""
    return [[k for b in r["batches"][str(epoch)] for k in b] for r in res]


def test_exact_disjoint_cover_and_equal_batch_counts(data: dict[str, Any]) -> None:
    res = data["results"]["main"]
    for epoch in (0, 1, 2):
        per_rank = _epoch_keys(res, epoch)
        counts = [len(r["batches"][str(epoch)]) for r in res]
        assert counts[0] == counts[1] == res[0]["len"][str(epoch)] == 46 // 6
        assert all(len(b) == 3 for r in res for b in r["batches"][str(epoch)])
        seen = per_rank[0] + per_rank[1]
        assert len(seen) == len(set(seen)), "a sample was delivered twice"
        dropped = res[0]["dropped"][str(epoch)]
        assert res[1]["dropped"][str(epoch)] == dropped
        assert len(dropped) == 46 % 6
        assert sorted(seen + dropped) == sorted(all_keys(MAIN))


def test_dropped_keys_rotate_and_order_changes_across_epochs(data: dict[str, Any]) -> None:
    res = data["results"]["main"]
    dropped = [tuple(res[0]["dropped"][str(e)]) for e in (0, 1, 2)]
    assert len(set(dropped)) == 3, f"same samples dropped every epoch: {dropped}"
    orders = [_epoch_keys(res, e)[0] for e in (0, 1, 2)]
    assert orders[0] != orders[1] != orders[2]
    # Segments are reassigned to ranks: rank 0 reads a different set of shard segments each epoch.
    assert set(orders[0]) != set(orders[1])


def test_same_seed_and_epoch_give_same_batches(data: dict[str, Any], tmp_path: Path) -> None:
    # In-process, rank 0 of 2 with 2 workers: must reproduce what torchrun's rank 0 saw in epoch 1.
    loader = make_loader(
        str(data["root"] / "main" / "index.json"), batch_size=3, rank=0, world_size=2, **data["base"]
    )
    loader.set_epoch(1)
    assert [b["__key__"] for b in loader] == data["results"]["main"][0]["batches"]["1"]


def test_fewer_shards_than_readers(data: dict[str, Any]) -> None:
    res = data["results"]["few"]  # 2 shards, 2 ranks × 2 workers
    for epoch in (0, 1):
        a, b = _epoch_keys(res, epoch)
        assert len(res[0]["batches"][str(epoch)]) == len(res[1]["batches"][str(epoch)]) == 2
        assert not set(a) & set(b)
        assert len(set(a + b)) == 4 and set(a + b) | set(res[0]["dropped"][str(epoch)]) == set(
            all_keys([3, 2])
        )
    one = data["results"]["one"]  # 1 shard of 3 samples, pad to 2 ranks × batch 2: one worker idles
    a, b = _epoch_keys(one, 0)
    assert len(a) == len(b) == 2
    assert set(a + b) == set(all_keys([3])) and len(a + b) == 4


def test_pad_repeats_to_fill_last_batch(data: dict[str, Any]) -> None:
    res = data["results"]["pad"]
    a, b = _epoch_keys(res, 0)
    assert len(res[0]["batches"]["0"]) == len(res[1]["batches"]["0"]) == 6  # 46 → 48 = 2 ranks × 6 × 4
    assert set(a + b) == set(all_keys(MAIN))
    assert sum(c - 1 for c in Counter(a + b).values()) == 2


def test_corrupt_samples_are_counted_and_batches_stay_full(data: dict[str, Any]) -> None:
    res = data["results"]["bad"]
    assert sum(r["stats"]["errors"] for r in res) == len(BAD)
    bad_keys = {f"s{s:03d}_{i:05d}" for s, i in BAD}
    subs = [tuple(x) for r in res for x in r["stats"]["substituted"]]
    assert {x[0] for x in subs} == bad_keys and not {x[1] for x in subs} & bad_keys
    a, b = _epoch_keys(res, 0)
    assert len(a) == len(b) == 12
    assert set(a + b) == set(all_keys([12, 12])) - bad_keys


def test_resume_same_and_different_topology(data: dict[str, Any]) -> None:
    root = data["root"]
    res = data["results"]["main"]
    k = 3
    state = res[0]["states"]["1"][k - 1]
    assert state == res[1]["states"]["1"][k - 1], "state_dict differs between ranks"
    assert len(json.dumps(state)) < 400
    state_file = root / "state.json"
    state_file.write_text(json.dumps(state))
    src = str(root / "main" / "index.json")
    base = data["base"]
    # A single-process run (world size 1, no workers) delivers 5 batches; torchrun's 2 ranks take over.
    solo = make_loader(src, batch_size=3, rank=0, world_size=1, **{**base, "num_workers": 0})
    solo_seen = [k for b in itertools.islice(solo, 5) for k in b["__key__"]]
    solo_file = root / "solo-state.json"
    solo_file.write_text(json.dumps(solo.state_dict()))
    spec = [
        {**base, "name": "same", "source": src, "batch_size": 3, "epochs": [1, 2], "resume": str(state_file)},
        {**base, "name": "w3", "source": src, "batch_size": 3, "epochs": [1], "resume": str(state_file),
         "num_workers": 3},
        {**base, "name": "ws1to2", "source": src, "batch_size": 3, "epochs": [0], "resume": str(solo_file)},
    ]  # fmt: skip
    out = torchrun(spec, root / "run2")
    for r in range(2):
        assert out["same"][r]["batches"]["1"] == res[r]["batches"]["1"][k:]
        assert out["same"][r]["len"]["1"] == len(res[r]["batches"]["1"]) - k
        assert out["same"][r]["batches"]["2"] == res[r]["batches"]["2"]
    seen = {key for r in range(2) for b in res[r]["batches"]["1"][:k] for key in b}
    rest = {key for r in range(2) for b in res[r]["batches"]["1"][k:] for key in b}
    a, b = _epoch_keys(out["w3"], 1)
    assert len(a) == len(b) and not set(a) & set(b) and len(a + b) == len(set(a + b))
    assert set(a + b) == rest and not set(a + b) & seen
    # 46 samples at world size 1: 1 dropped, 15 seen, 30 left = 5 batches on each of 2 ranks, exactly.
    a, b = _epoch_keys(out["ws1to2"], 0)
    assert len(a) == len(b) == 15 and not set(a) & set(b)
    assert sorted(a + b + solo_seen + solo.dropped_keys) == sorted(all_keys(MAIN))
    # And in-process with 4 ranks × 0 workers: the rest of the epoch is still covered exactly once.
    keys: list[str] = []
    lens = set()
    for rank in range(4):
        loader = make_loader(src, batch_size=3, rank=rank, world_size=4, **{**base, "num_workers": 0})
        loader.load_state_dict(state)
        lens.add(len(loader))
        keys += [key for batch in loader for key in batch["__key__"]]
    assert len(lens) == 1 and sorted(keys) == sorted(rest)
