"""Planning is pure: these tests pin its guarantees (balance, shuffle, determinism, caps) directly."""

from __future__ import annotations

import numpy as np
import pytest

from pass_wds.convert.planning import plan_shards
from pass_wds.format.keys import safe_key
from pass_wds.format.tar import END_OF_ARCHIVE, member_bytes, sample_bytes


def _items(n: int, seed: int = 1) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    keys = [f"{i:032x}" for i in rng.permutation(n)]
    sizes = [sample_bytes(int(s), 300) for s in rng.integers(20_000, 120_000, n)]
    return keys, sizes


def test_member_bytes_counts_header_and_padding() -> None:
    assert member_bytes(0) == 512
    assert member_bytes(1) == 1024
    assert member_bytes(512) == 1024
    assert member_bytes(513) == 1536


def test_every_item_exactly_once_and_sizes_predicted() -> None:
    keys, sizes = _items(5000)
    plan = plan_shards(keys, sizes, target_bytes=20_000_000, seed=3)
    flat = [i for s in plan.shards for i in s]
    assert sorted(flat) == list(range(len(keys)))
    for shard, predicted in zip(plan.shards, plan.shard_bytes, strict=True):
        assert predicted == END_OF_ARCHIVE + sum(sizes[i] for i in shard)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spread", ["uniform", "heavy-tailed"])
def test_balance_within_one_sample_including_last_shard(seed: int, spread: str) -> None:
    """Shards differ by at most the largest sample's footprint, whatever the size distribution."""
    keys, sizes = _items(5000, seed)
    if spread == "heavy-tailed":
        rng = np.random.default_rng(seed)
        sizes = [sample_bytes(int(s), 300) for s in rng.lognormal(10.5, 1.2, len(keys)).clip(100, 5_000_000)]
    plan = plan_shards(keys, sizes, target_bytes=20_000_000, seed=seed)
    assert len(plan.shard_bytes) == round(sum(sizes) / 20_000_000)
    assert max(plan.shard_bytes) - min(plan.shard_bytes) <= max(sizes)


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    keys, sizes = _items(2000)
    a = plan_shards(keys, sizes, target_bytes=5_000_000, seed=7)
    b = plan_shards(keys, sizes, target_bytes=5_000_000, seed=7)
    c = plan_shards(keys, sizes, target_bytes=5_000_000, seed=8)
    assert a.shards == b.shards
    assert a.shards != c.shards


def test_plan_independent_of_listing_order() -> None:
    keys, sizes = _items(1000)
    perm = np.random.default_rng(5).permutation(len(keys))
    keys2, sizes2 = [keys[i] for i in perm], [sizes[i] for i in perm]
    a = plan_shards(keys, sizes, target_bytes=3_000_000, seed=1)
    b = plan_shards(keys2, sizes2, target_bytes=3_000_000, seed=1)
    assert [[keys[i] for i in s] for s in a.shards] == [[keys2[i] for i in s] for s in b.shards]


def test_shards_are_shuffled_not_sorted_runs() -> None:
    keys, sizes = _items(4000)
    plan = plan_shards(keys, sizes, target_bytes=10_000_000, seed=2)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    rank = {idx: r for r, idx in enumerate(order)}
    # A random sample of the dataset spans (almost) the whole key range in every shard.
    for shard in plan.shards:
        ranks = [rank[i] for i in shard]
        assert max(ranks) - min(ranks) > 0.8 * len(keys)
        assert ranks != sorted(ranks)


def test_max_count_caps_samples_per_shard() -> None:
    keys, sizes = _items(1000)
    plan = plan_shards(keys, sizes, target_bytes=10**12, seed=0, max_count=64)
    assert max(len(s) for s in plan.shards) <= 64
    assert len(plan.shards) == 16
    assert sum(len(s) for s in plan.shards) == 1000


def test_empty_and_tiny_inputs() -> None:
    assert plan_shards([], [], target_bytes=100, seed=0).shards == []
    plan = plan_shards(["a", "b"], [2048, 2048], target_bytes=10, seed=0)
    assert len(plan.shards) == 2 and all(len(s) == 1 for s in plan.shards)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        plan_shards(["a"], [1, 2], target_bytes=10, seed=0)
    with pytest.raises(ValueError):
        plan_shards(["a"], [1], target_bytes=0, seed=0)


@pytest.mark.parametrize(
    "key",
    [
        "0123456789abcdef0123456789abcdef",
        "with.dot",
        "exifsamples__WWL_(Polaroid)_ION230",
        "é漢字",
        "x" * 200,
        "...",
    ],
)
def test_safe_key_is_ascii_dotless_short_and_injective(key: str) -> None:
    k = safe_key(key)
    assert k.isascii() and "." not in k and len(k) <= 64 and "/" not in k
    assert k == safe_key(key)
    if key.isascii() and key.isalnum() and len(key) <= 64:
        assert k == key


def test_safe_key_distinguishes_keys_that_clean_to_the_same_text() -> None:
    assert safe_key("a.b") != safe_key("a b") != safe_key("a_b")
