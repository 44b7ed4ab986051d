"""Resume states are untrusted input (issue 19 item 4): every field is checked against a declared schema before
use, a bad state is refused with one line naming the field, a refusal leaves the loader exactly as it was, and a
state saved on one dataset is refused by another whose shards have the same names and counts but other images."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from shardkit import jpeg_bytes, write_shards

from pass_wds.loading import make_loader
from pass_wds.loading.state import LoaderState, StateError, parse_state

COUNTS = [9, 7, 6]
KW: dict[str, Any] = {"batch_size": 2, "num_workers": 0, "segment_samples": 3, "seed": 4, "recipe": None}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("state")
    write_shards(root, COUNTS)
    return root


def _keys(loader: Any) -> list[list[str]]:
    return [b["__key__"] for b in loader]


def _saved(shards: Path) -> dict[str, Any]:
    """A real mid-epoch state of the second epoch (3 batches delivered), JSON round-tripped."""
    loader = make_loader(str(shards / "index.json"), **KW)
    loader.set_epoch(1)
    list(itertools.islice(loader, 3))
    return json.loads(json.dumps(loader.state_dict()))


def _set(state: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(state)
    target: Any = out
    for p in path[:-1]:
        target = target[p]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_DELETE = _Missing()

# (path into the state, bad value, the field the one-line refusal must name)
BAD: list[tuple[tuple[Any, ...], Any, str]] = [
    (("epoch",), -1, "epoch"),
    (("epoch",), "1", "epoch"),
    (("epoch",), 1.0, "epoch"),
    (("epoch",), True, "epoch"),
    (("epoch",), 2**70, "epoch"),
    (("epoch",), _DELETE, "epoch"),
    (("version",), 99, "version"),
    (("version",), _DELETE, "version"),
    (("fingerprint",), _DELETE, "fingerprint"),
    (("fingerprint",), 12345, "fingerprint"),
    (("fingerprint",), "0" * 10_000, "fingerprint"),
    (("seed",), "4", "seed"),
    (("batch_size",), 0, "batch_size"),
    (("batch_size",), None, "batch_size"),
    (("generations",), "1,2,4", "generations"),
    (("generations",), {"a": 1}, "generations"),
    (("generations",), [[1, 2, 3]] * 100_000, "generations"),
    (("generations", 0), [1, 2], "generations[0]"),
    (("generations", 0), [1, 2, 3, 4], "generations[0]"),
    (("generations", 0), "abc", "generations[0]"),
    (("generations", 0, 2), -5, "generations[0][2]"),
    (("generations", 0, 2), 10**6, "generations[0][2]"),
    (("generations", 0, 0), 0, "generations[0][0]"),
    (("generations", 0, 1), 0, "generations[0][1]"),
    (("generations", 0, 1), 10**9, "generations[0][1]"),
    (("generations", 0, 0), 10**12, "generations[0][0]"),
    (("generations", 0, 2), 2.5, "generations[0][2]"),
    (("unexpected",), 1, "unexpected"),
]


@pytest.mark.parametrize(
    "path,value,field", BAD, ids=[f"{'.'.join(map(str, p))}={v!r:.20}" for p, v, _ in BAD]
)
def test_a_malformed_state_is_one_line_naming_the_field_and_changes_nothing(
    shards: Path, path: tuple[Any, ...], value: Any, field: str
) -> None:
    saved = _saved(shards)
    loader = make_loader(str(shards / "index.json"), **KW)
    loader.set_epoch(1)
    head = [
        b["__key__"] for b in itertools.islice(loader, 1)
    ]  # the loader has a position of its own: one batch of epoch 1
    before, length = loader.state_dict(), len(loader)
    with pytest.raises(ValueError) as e:
        loader.load_state_dict(_set(saved, path, value))
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert f"'{field}'" in msg, msg
    assert isinstance(e.value, StateError)
    # exactly as it was: same position, same length, and it continues with exactly the batches it would have
    assert loader.state_dict() == before and len(loader) == length
    reference = make_loader(str(shards / "index.json"), **KW)
    reference.set_epoch(1)
    assert head + _keys(loader) == _keys(reference)


@pytest.mark.parametrize("state", [None, [], "state", 3, [["version", 1]]])
def test_a_state_that_is_not_a_mapping_is_refused(shards: Path, state: Any) -> None:
    loader = make_loader(str(shards / "index.json"), **KW)
    with pytest.raises(StateError, match="loader state must be a mapping"):
        loader.load_state_dict(state)


def test_more_batches_than_the_epoch_has_is_refused_and_changes_nothing(shards: Path) -> None:
    saved = _saved(shards)
    loader = make_loader(str(shards / "index.json"), **KW)
    before = loader.state_dict()
    # 22 samples in batches of 2 on one rank: 11 batches; 12 cannot have been delivered
    for bad in ([[1, 1, 12]], [[1, 1, 12], [1, 2, 1]]):
        with pytest.raises(StateError, match=r"'generations\[0\]\[2\]'") as e:
            loader.load_state_dict({**saved, "generations": bad})
        assert "\n" not in str(e.value)
        assert loader.state_dict() == before and loader.epoch == 0


def test_a_valid_state_still_resumes_exactly(shards: Path) -> None:
    saved = _saved(shards)
    full = make_loader(str(shards / "index.json"), **KW)
    full.set_epoch(1)
    reference = _keys(full)
    resumed = make_loader(str(shards / "index.json"), **KW)
    resumed.load_state_dict(saved)
    assert reference[:3] + _keys(resumed) == reference


def test_parse_state_returns_typed_fields(shards: Path) -> None:
    state = parse_state(_saved(shards))
    assert isinstance(state, LoaderState)
    assert state.epoch == 1 and state.generations[0].batches == 3 and state.batch_size == 2
    assert parse_state(state.to_dict()) == state  # the schema round-trips


def _other_images(shard: int, i: int) -> bytes:
    return jpeg_bytes(1000 + shard * 100 + i, size=(24 + i % 3, 16))  # other pixels, other byte sizes


@pytest.mark.parametrize("with_index_json", [True, False], ids=["manifest", "idx-only"])
def test_a_state_of_another_dataset_with_the_same_names_and_counts_is_refused(
    tmp_path: Path, with_index_json: bool
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_shards(a, COUNTS, with_index_json=with_index_json)
    write_shards(b, COUNTS, image=_other_images, with_index_json=with_index_json)
    src = "index.json" if with_index_json else "shard-{000000..000002}.tar"
    first = make_loader(str(a / src), **KW)
    list(itertools.islice(first, 2))
    other = make_loader(str(b / src), **KW)
    before = other.state_dict()
    with pytest.raises(StateError, match="different shards or settings") as e:
        other.load_state_dict(first.state_dict())
    assert "\n" not in str(e.value)
    assert other.state_dict() == before
    # the same dataset copied elsewhere is the same content: its state resumes there
    copy_of_a = tmp_path / "a-copy"
    write_shards(copy_of_a, COUNTS, with_index_json=with_index_json)
    again = make_loader(str(copy_of_a / src), **KW)
    again.load_state_dict(first.state_dict())
    assert len(again) == len(first) and _keys(again) == _keys(first)
