"""Per-sample random streams for a whole batch at once, identical to ``numpy.random.default_rng(words)``.

Why: every sample's augmentation draws from its own ``default_rng([seed, epoch, generation, index,
substitute, tag])`` stream, so that a resumed or re-sharded run draws the same crops. Building one costs ~36 µs
(numpy's ``SeedSequence`` hashes its entropy in scalar steps and allocates on the way), ~4 % of a plain
decode per image. The hash has no data-dependent control flow, so :func:`batch_generators` computes it for all
samples of a batch with a few vectorised uint32 operations and seeds each ``PCG64`` from the result (~4 µs a
sample): the same state, hence the same stream (tests/test_handoff.py checks it against ``default_rng``).
Values that do not fit one uint32 word take numpy's own path.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numpy.random.bit_generator import ISeedSequence

_M = 0xFFFFFFFF
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875  # numpy/random/bit_generator.pyx: the entropy-mixing hash
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED  # ... and the state-generating one
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_POOL = 4  # SeedSequence's default pool size
_U = np.uint32


@lru_cache(maxsize=8)
def _constants(n_words: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The (data-independent) sequence of hash constants of mixing ``n_words`` entropy words, grouped as the
    vectorised steps use them, and the 8 constants of generating a PCG64 state."""
    hc = _INIT_A
    seq = []
    for _ in range(_POOL + _POOL * (_POOL - 1) + _POOL * max(0, n_words - _POOL)):
        seq.append(hc)
        hc = (hc * _MULT_A) & _M
    seq.append(hc)
    # hashmix uses the constant before and after its update: value ^ c[i], then * c[i + 1]
    steps = []
    i = 0
    for count in [_POOL] + [_POOL - 1] * _POOL + [_POOL] * max(0, n_words - _POOL):
        steps.append(np.array([[seq[i + j], seq[i + j + 1]] for j in range(count)], dtype=_U))
        i += count
    hb = _INIT_B
    gen = []
    for _ in range(2 * _POOL):
        nxt = (hb * _MULT_B) & _M
        gen.append([hb, nxt])
        hb = nxt
    return steps, np.array(gen, dtype=_U)


def _hashmix(values: np.ndarray, consts: np.ndarray) -> np.ndarray:
    """SeedSequence's hashmix of ``values`` (k, n) with the k constant pairs of these steps."""
    v = values ^ consts[:, :1]
    v *= consts[:, 1:]
    v ^= v >> _U(16)
    return v


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r: np.ndarray = np.subtract(np.multiply(x, _U(_MIX_L)), np.multiply(y, _U(_MIX_R)), dtype=_U)
    r ^= r >> _U(16)
    return r


def seed_states(words: np.ndarray) -> np.ndarray:
    """``SeedSequence(row).generate_state(4, np.uint64)`` for each row of ``words`` ((n, k) uint32, k >= 4)."""
    n_words = words.shape[1]
    steps, gen = _constants(n_words)
    with np.errstate(over="ignore"):
        pool = _hashmix(words[:, :_POOL].T.copy(), steps[0])  # (4, n)
        for s in range(_POOL):
            others = [d for d in range(_POOL) if d != s]
            hm = _hashmix(np.broadcast_to(pool[s], (_POOL - 1, pool.shape[1])), steps[1 + s])
            pool[others] = _mix(pool[others], hm)
        for j, w in enumerate(range(_POOL, n_words)):
            hm = _hashmix(np.broadcast_to(words[:, w], pool.shape), steps[1 + _POOL + j])
            pool = _mix(pool, hm)
        out = _hashmix(pool[[i % _POOL for i in range(2 * _POOL)]], gen)  # (8, n)
    return np.ascontiguousarray(out.T).view(np.uint64)  # (n, 4): little-endian word pairs, as numpy does


class _State:
    """A seed sequence that only hands out a precomputed state (numpy's ISeedSequence interface)."""

    __slots__ = ("state",)

    def __init__(self, state: np.ndarray) -> None:
        self.state = state

    def generate_state(self, n_words: int, dtype: type = np.uint32) -> np.ndarray:
        if n_words != _POOL or np.dtype(dtype) != np.uint64:
            raise ValueError("a precomputed PCG64 state")
        return self.state


ISeedSequence.register(_State)


def batch_generators(
    prefix: Sequence[int], varying: Sequence[int], suffix: Sequence[int]
) -> list[np.random.Generator]:
    """``[default_rng([*prefix, v, *suffix]) for v in varying]``, the same streams, built together."""
    entropy = [*prefix, *suffix]
    if not varying or any(not 0 <= int(x) <= _M for x in [*entropy, *varying]) or len(entropy) + 1 < _POOL:
        return [np.random.default_rng([*prefix, int(v), *suffix]) for v in varying]
    words = np.empty((len(varying), len(entropy) + 1), dtype=_U)
    words[:, : len(prefix)] = np.asarray(prefix, dtype=_U)
    words[:, len(prefix)] = np.asarray(varying, dtype=_U)
    words[:, len(prefix) + 1 :] = np.asarray(suffix, dtype=_U)
    states = seed_states(words)
    return [np.random.Generator(np.random.PCG64(_State(s))) for s in states]  # type: ignore[arg-type]


__all__ = ["batch_generators", "seed_states"]
