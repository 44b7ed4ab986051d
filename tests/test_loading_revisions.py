"""The loader across dataset revisions (issue 18 item 4): a state saved on revision r is refused on revision
r+1 with one line naming both, unless ``across_revisions=True``; then the rest of the epoch is the unseen kept
samples, each delivered exactly once, the removed ones never — mid-epoch, same and different world size,
with and without DataLoader workers, across one and two revisions.

Real make-shards outputs, real ``make-shards update`` runs; ranks are simulated in-process with ``rank=`` and
``world_size=`` (every rank plans the same epoch independently, which is what makes this work under torchrun).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOutputs

from pass_wds.cli import make_shards_main
from pass_wds.format.idx import parse_idx
from pass_wds.loading import make_loader
from pass_wds.loading.state import StateError

# small segments and a small shuffle buffer: the replayed epoch depends on every sample's size
KW: dict[str, Any] = {
    "batch_size": 2,
    "recipe": None,
    "num_workers": 0,
    "segment_samples": 2,
    "shuffle_buffer_bytes": "150KB",
    "seed": 5,
}


@pytest.fixture(scope="module")
def base(fake_outputs: FakeOutputs) -> Path:
    return fake_outputs.small_output("200KB", n_images=72)


@pytest.fixture
def out(base: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "out"
    shutil.copytree(base, dest)
    return dest


def _keys(out: Path) -> list[str]:
    index = json.loads((out / "index.json").read_text())
    return [k for e in index["shardlist"] for k in parse_idx((out / e["idx"]).read_text()).keys]


def _remove(out: Path, keys: list[str], tmp_path: Path, name: str = "takedown.txt") -> None:
    (tmp_path / name).write_text("".join(k + "\n" for k in keys))
    assert make_shards_main(["update", str(out), "--remove", str(tmp_path / name)]) == 0


def _loaders(out: Path, world: int, **kw: Any) -> list[Any]:
    return [
        make_loader(str(out / "index.json"), **{**KW, **kw}, rank=r, world_size=world) for r in range(world)
    ]


def _take(loaders: list[Any], batches: int) -> list[str]:
    """``batches`` batches from every rank (as DDP would), their keys."""
    keys: list[str] = []
    its = [iter(ld) for ld in loaders]
    for _ in range(batches):
        for it in its:
            keys += next(it)["__key__"]
    return keys


def _rest(loaders: list[Any]) -> list[str]:
    return [k for ld in loaders for b in ld for k in b["__key__"]]


def _interrupted(
    out: Path, world: int, batches: int, **kw: Any
) -> tuple[list[str], list[str], dict[str, Any]]:
    """The full epoch 1 of this revision, and a run of it interrupted after ``batches`` batches per rank:
    (the uninterrupted epoch's keys, the keys delivered before the interruption, the saved state)."""
    full = _loaders(out, world, **kw)
    for ld in full:
        ld.set_epoch(1)
    epoch = _rest(full)
    run = _loaders(out, world, **kw)
    for ld in run:
        ld.set_epoch(1)
    before = _take(run, batches)
    states = [ld.state_dict() for ld in run]
    assert all(s == states[0] for s in states)
    return epoch, before, json.loads(json.dumps(states[0]))


def _check_rest(
    epoch: list[str], before: list[str], after: list[str], dropped: set[str], removed: set[str]
) -> None:
    """Every kept sample of the interrupted epoch delivered exactly once (before or after), none removed
    after the resume; ``dropped``: the new generation's remainder (remainder='drop', fewer than one global
    batch), reported by the loader (a sample dropped on one revision may have been removed by a later one)."""
    assert not [k for k, n in Counter(before + after).items() if n > 1]
    assert not set(after) & removed
    assert set(after) | (dropped - removed) == set(epoch) - set(before) - removed


def test_a_state_of_the_previous_revision_is_refused_naming_both(out: Path, tmp_path: Path) -> None:
    _, before, state = _interrupted(out, 1, 3)
    assert state["revision"] == 0
    _remove(out, _keys(out)[::9], tmp_path)
    resumed = make_loader(str(out / "index.json"), **KW)
    assert resumed.revision == 1
    with pytest.raises(StateError) as e:
        resumed.load_state_dict(state)
    msg = str(e.value)
    assert "\n" not in msg and "revision 0" in msg and "revision 1" in msg and "across_revisions=True" in msg
    assert resumed.state_dict()["generations"] == [] and resumed.epoch == 0  # unchanged


@pytest.mark.parametrize("workers", [0, 2])
def test_across_one_revision_same_world_size(out: Path, tmp_path: Path, workers: int) -> None:
    epoch, before, state = _interrupted(out, 1, 5, num_workers=workers)
    unseen = [k for k in epoch if k not in before]
    removed = set(unseen[::4]) | set(before[:2])  # some not yet seen, some already delivered
    _remove(out, sorted(removed), tmp_path)
    (resumed,) = _loaders(out, 1, num_workers=workers, across_revisions=True)
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    n = len(resumed)
    after = _rest([resumed])
    assert len(after) == n * KW["batch_size"]
    _check_rest(epoch, before, after, set(resumed.dropped_keys), removed)
    assert len(resumed.dropped_keys) < KW["batch_size"]
    assert resumed.epoch == 2 and len(_rest([resumed])) >= len(after)  # the next epoch is a plain one


@pytest.mark.parametrize("old_world,new_world", [(2, 3), (3, 1)])
def test_across_one_revision_other_world_size(
    out: Path, tmp_path: Path, old_world: int, new_world: int
) -> None:
    epoch, before, state = _interrupted(out, old_world, 2)
    unseen = [k for k in epoch if k not in before]
    removed = set(unseen[1::3])
    _remove(out, sorted(removed), tmp_path)
    resumed = _loaders(out, new_world, across_revisions=True)
    for ld in resumed:
        ld.load_state_dict(state)
    lengths = {len(ld) for ld in resumed}
    assert len(lengths) == 1  # equal batches on every rank
    dropped = [set(ld.dropped()) for ld in resumed]
    assert all(d == dropped[0] for d in dropped)
    after = _rest(resumed)
    assert len(after) == lengths.pop() * KW["batch_size"] * new_world
    _check_rest(epoch, before, after, dropped[0], removed)


def test_across_two_revisions_and_a_state_saved_mid_way(out: Path, tmp_path: Path) -> None:
    """r0 state → r1 (carried, interrupted again, saved: the state records the carried part) → r2."""
    epoch, before, state = _interrupted(out, 2, 2)
    unseen = [k for k in epoch if k not in before]
    first = set(unseen[::5])
    _remove(out, sorted(first), tmp_path, "a.txt")
    mid = _loaders(out, 2, across_revisions=True)
    for ld in mid:
        ld.load_state_dict(state)
    mid_dropped = set(mid[0].dropped())  # that generation's own remainder
    middle = _take(mid, 2)
    state1 = json.loads(json.dumps(mid[0].state_dict()))
    assert state1["revision"] == 1 and state1["carried"][0][0] == 0
    # the same revision resumes it exactly, across_revisions or not
    again = _loaders(out, 2)
    for ld in again:
        ld.load_state_dict(state1)
    assert _rest(again) == _rest(mid)
    left = [k for k in epoch if k not in before + middle and k not in first]
    second = set(left[::3])
    _remove(out, sorted(second), tmp_path, "b.txt")
    last = _loaders(out, 3, across_revisions=True)
    for ld in last:
        ld.load_state_dict(state1)
    after = _rest(last)
    _check_rest(epoch, before + middle, after, mid_dropped | set(last[0].dropped_keys), first | second)
    assert len(last[0].dropped_keys) < 3 * KW["batch_size"]


def test_states_that_cannot_be_carried_are_refused(out: Path, tmp_path: Path) -> None:
    _, _, state = _interrupted(out, 1, 2)
    _remove(out, _keys(out)[::11], tmp_path)
    (ld,) = _loaders(out, 1, across_revisions=True)
    cases = [
        ({**state, "revision": 2}, "newer than this dataset"),
        ({**state, "fingerprint": "0" * 16}, "does not match revision 0"),
        ({**state, "seed": 6}, "'seed'"),
        ({**state, "carried": [[0, [[1, 1, 0]]]]}, "'carried'"),
        ({**state, "carried": [[0, []]]}, "'carried[0][1]'"),
        ({**state, "carried": "x"}, "'carried'"),
        ({**state, "revision": -1}, "'revision'"),
    ]
    before = ld.state_dict()
    for bad, words in cases:
        with pytest.raises(StateError) as e:
            ld.load_state_dict(bad)
        assert "\n" not in str(e.value) and words in str(e.value), (bad, str(e.value))
        assert ld.state_dict() == before
    # a source without index.json has no revisions: a revision-1 state is refused there too
    shards = sorted(str(p) for p in out.glob("*.tar"))
    plain = make_loader(shards, **KW, across_revisions=True)
    with pytest.raises(StateError, match="revision"):
        plain.load_state_dict({**state, "revision": 1})


def test_across_a_revision_under_torchrun(out: Path, tmp_path: Path) -> None:
    """A state saved by one process (world size 1, 2 workers) on revision 0 resumes on revision 1 under real
    torchrun: 2 ranks × 2 DataLoader workers, gloo all_reduce after every batch (a rank with one batch more
    would hang), each kept sample of the epoch delivered once."""
    from test_loading_ddp import torchrun

    epoch, before, state = _interrupted(out, 1, 4, num_workers=2)
    removed = set([k for k in epoch if k not in before][::3])
    _remove(out, sorted(removed), tmp_path)
    (tmp_path / "state.json").write_text(json.dumps(state))
    spec = [
        {"name": "carried", "source": str(out / "index.json"), "batch_size": KW["batch_size"], "num_workers": 2,
         "seed": KW["seed"], "segment_samples": KW["segment_samples"], "shuffle_buffer_bytes": 150_000,
         "epochs": [1], "resume": str(tmp_path / "state.json"), "across_revisions": True},
    ]  # fmt: skip
    res = torchrun(spec, tmp_path / "run")["carried"]
    assert res[0]["len"]["1"] == res[1]["len"]["1"]
    after = [k for r in range(2) for b in res[r]["batches"]["1"] for k in b]
    _check_rest(epoch, before, after, set(res[0]["dropped"]["1"]), removed)
