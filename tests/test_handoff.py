"""Worker → main hand-off through reused shared-memory arenas (pass_wds.loading.handoff): the batches are byte
for byte those of the plain hand-off, in the same order; a batch the training loop keeps is never
rewritten; arenas are reused and released (also after an interrupted epoch)."""

from __future__ import annotations

import gc
import pickle
from typing import Any

import numpy as np
import pytest
import torch
from conftest import find_image
from shardkit import TinyRecipe, write_shards
from test_loading_recipes import PHOTOS

from pass_wds.augment import load_recipe
from pass_wds.loading import make_loader
from pass_wds.loading.handoff import BatchArenas, _Lease


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("handoff-photos")
    images = [find_image(n).read_bytes() for n in PHOTOS]
    write_shards(root, [6, 6], image=lambda s, i: images[s * 6 + i])
    return str(root / "index.json")


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("handoff-many")
    write_shards(root, [20, 20])
    return str(root / "index.json")


class MixedRecipe(TinyRecipe):
    """Two uint8 views, a float tensor, a numpy value and a plain string per sample: every kind of output
    the hand-off treats differently (arena tensors, torch's numpy conversion, lists)."""

    def __call__(self, data: bytes, ext: str, rng: np.random.Generator) -> dict[str, Any]:
        out = super().__call__(data, ext, rng)
        out["score"] = torch.tensor([rng.random(), 2.0], dtype=torch.float32)
        out["label"] = np.int64(len(data) % 7)
        out["tag"] = f"t{len(data)}"
        return out


def _same(a: Any, b: Any, where: str = "batch") -> None:
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert (a.dtype, tuple(a.shape), a.stride()) == (b.dtype, tuple(b.shape), b.stride()), where
        assert torch.equal(a, b), f"{where}: values differ"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            if k != "__stats__":
                _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _epochs(loader: Any, epochs: int) -> list[dict[str, Any]]:
    return [b for _ in range(epochs) for b in loader]


CASES = {
    "simclr": dict(recipe="simclr"),
    "simclr-colour-cpu": dict(recipe=load_recipe("simclr", colour="cpu"), device="cpu"),
    "eval": dict(recipe="eval", prefetch_factor=1),
    "mixed": dict(recipe=MixedRecipe(size=8, views=2)),
    "undecoded": dict(recipe=None),
}


@pytest.mark.parametrize(
    ("case", "workers"),
    [("simclr", 1), ("simclr", 2), ("simclr-colour-cpu", 2), ("eval", 2), ("mixed", 1), ("undecoded", 2)],
)
def test_arenas_deliver_the_same_batches_in_the_same_order(photos: str, case: str, workers: int) -> None:
    """Two epochs (the second reuses the first's arenas) are identical to the plain hand-off's, byte for byte,
    strides, dtypes, keys, metadata and numpy conversions included."""
    opts = {"batch_size": 3, "num_workers": workers, **CASES[case]}
    reused = make_loader(photos, reuse_buffers=True, **opts)
    plain = make_loader(photos, reuse_buffers=False, **opts)
    got, want = _epochs(reused, 2), _epochs(plain, 2)
    assert len(got) == len(want) == 8
    _same(got, want)
    if case not in ("undecoded",):
        assert reused._arenas is not None and reused._arenas._maps, "the batches did not come through arenas"
    assert plain._arenas is None


def test_a_batch_the_loop_keeps_is_never_rewritten(many: str) -> None:
    """The training loop keeps every batch of an epoch (more than the arenas of each worker): no arena is
    reused while its batch is alive, so every kept batch still holds its own pixels."""
    opts = dict(batch_size=2, num_workers=2, prefetch_factor=1, recipe=TinyRecipe(size=8, views=2))
    reused = make_loader(many, **opts)
    kept = list(reused)  # 20 batches, 10 per worker, 3 arenas per worker
    assert reused._arenas is not None
    assert reused._arenas.busy() <= reused._arenas.workers * reused._arenas.slots
    _same(kept, list(make_loader(many, reuse_buffers=False, **opts)))


def test_arenas_are_reused_and_released_after_an_interrupted_epoch(many: str) -> None:
    opts = dict(batch_size=2, num_workers=2, recipe=TinyRecipe(size=8, views=2))
    reused, plain = make_loader(many, **opts), make_loader(many, reuse_buffers=False, **opts)
    arenas = reused._arenas
    assert isinstance(arenas, BatchArenas)
    got: list[dict[str, Any]] = []
    want: list[dict[str, Any]] = []
    for loader, out in ((reused, got), (plain, want)):
        for i, b in enumerate(loader):  # interrupted: the workers' prefetched batches are discarded
            out.append(b)
            if i == 2:
                break
        for _ in range(2):
            out.extend(loader)  # the rest of epoch 0, then epoch 1
    _same(got, want)
    del got, want
    gc.collect()
    assert arenas.busy() == 0, "an arena stayed busy after its batch was freed or discarded"
    # 40 batches went through at most prefetch_factor + 2 arenas per worker, each mapped once
    assert 0 < len(arenas._maps) <= arenas.workers * arenas.slots
    assert int(arenas.table[2].max()) <= arenas.slots


def test_a_reference_unpickled_elsewhere_fails_clearly() -> None:
    blob = pickle.dumps(_Lease("no-such-loader", 0, 0, 1, None, 8))
    with pytest.raises(RuntimeError, match="outside its loader's process"):
        pickle.loads(blob)


def test_reuse_buffers_is_checked() -> None:
    from pass_wds.config import ConfigError
    from pass_wds.loading import LoaderConfig

    with pytest.raises(ConfigError, match="reuse_buffers"):
        LoaderConfig(source="x", reuse_buffers="yes").validate_values()  # type: ignore[arg-type]
