"""The loader's resume state: a declared schema, checked field by field before anything uses it.

A state comes back from a checkpoint file, which may be stale, hand-edited, truncated or hostile, so it is
untrusted input: :func:`parse_state` checks every field's type and range and refuses a bad state with a
:class:`StateError` of one line naming the field (``'generations[1][2]' must be a whole number >= 0, got -3``),
never a ``KeyError`` or an unpacking error. The ranges also bound what planning a resumed epoch can cost.

Adding a field: one :class:`LoaderState` attribute and one :class:`Field` line in :data:`FIELDS` (its parser,
and its ``default`` if states saved before it existed stay loadable). ``Loader.state_dict()`` writes
:meth:`LoaderState.to_dict`, so the writer and the reader cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pass_wds.loading.plan import Generation

STATE_VERSION = 2
"""Version 2: the fingerprint covers the shards' content (sha256 or layout), not only their names and counts."""

MAX_EPOCH = 2**53
MAX_SEED = 2**64 - 1
MAX_BATCH_SIZE = 2**31
MAX_WORLD_SIZE = 1 << 20
MAX_WORKERS = 1024
MAX_BATCHES = 2**53
MAX_GENERATIONS = 256
"""Each generation is one resume with another topology; replaying one costs a pass over the epoch's plan."""
MAX_REVISION = 100_000  # format.revisions.MAX_HISTORY
MAX_CARRIED = 64
"""Revisions one epoch may be carried across (``across_revisions``); each costs a replay of its plan."""


class StateError(ValueError):
    """A resume state that cannot be used; the message is one line and names the field."""


_MISSING = object()


def _whole(lo: int, hi: int) -> Callable[[Any, str], int]:
    def parse(value: Any, name: str) -> int:
        if type(value) is not int:  # bool is an int subclass, a float 1.0 is no count
            raise StateError(f"loader state field '{name}' must be a whole number, got {_shown(value)}")
        if not lo <= value <= hi:
            raise StateError(f"loader state field '{name}' must be between {lo} and {hi:,}, got {value:,}")
        return value

    return parse


def _pattern(regex: str, what: str) -> Callable[[Any, str], str]:
    compiled = re.compile(regex)

    def parse(value: Any, name: str) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise StateError(f"loader state field '{name}' must be {what}, got {_shown(value)}")
        return value

    return parse


def _generations(value: Any, name: str) -> tuple[Generation, ...]:
    if not isinstance(value, list | tuple):
        raise StateError(
            f"loader state field '{name}' must be a list of [world_size, num_workers, batches], got {_shown(value)}"
        )
    if len(value) > MAX_GENERATIONS:
        raise StateError(
            f"loader state field '{name}' has {len(value):,} entries, more than {MAX_GENERATIONS} topology changes"
        )
    parts = (
        ("world_size", _whole(1, MAX_WORLD_SIZE)),
        ("num_workers", _whole(1, MAX_WORKERS)),
        ("batches", _whole(0, MAX_BATCHES)),
    )
    out = []
    for i, gen in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(gen, list | tuple) or len(gen) != len(parts):
            raise StateError(
                f"loader state field '{where}' must be [world_size, num_workers, batches], got {_shown(gen)}"
            )
        ws, nw, batches = (
            parse(v, f"{where}[{j}]") for j, (v, (_, parse)) in enumerate(zip(gen, parts, strict=True))
        )
        out.append(Generation(ws, nw, batches))
    return tuple(out)


def _dump_generations(value: tuple[Generation, ...]) -> list[list[int]]:
    return [[g.world_size, g.num_workers, g.batches] for g in value]


def _carried(value: Any, name: str) -> tuple[tuple[int, tuple[Generation, ...]], ...]:
    """``[[revision, generations], …]``: the parts of the current epoch served on earlier revisions of the
    dataset (oldest first), before it was carried over (``across_revisions``)."""
    if not isinstance(value, list | tuple) or len(value) > MAX_CARRIED:
        raise StateError(
            f"loader state field '{name}' must be a list of at most {MAX_CARRIED} [revision, generations], "
            f"got {_shown(value)}"
        )
    out = []
    last = -1
    for i, part in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(part, list | tuple) or len(part) != 2:
            raise StateError(
                f"loader state field '{where}' must be [revision, generations], got {_shown(part)}"
            )
        revision = _whole(0, MAX_REVISION)(part[0], f"{where}[0]")
        if revision <= last:
            raise StateError(f"loader state field '{where}[0]' must be larger than the revision before it")
        last = revision
        gens = _generations(part[1], f"{where}[1]")
        if not gens:
            raise StateError(f"loader state field '{where}[1]' must hold at least one generation")
        out.append((revision, gens))
    return tuple(out)


def _dump_carried(value: tuple[tuple[int, tuple[Generation, ...]], ...]) -> list[list[Any]]:
    return [[revision, _dump_generations(gens)] for revision, gens in value]


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


@dataclass(frozen=True)
class Field:
    """One field of the state: how it is checked (``parse(value, name)``), and written back (``dump``)."""

    name: str
    parse: Callable[[Any, str], Any]
    dump: Callable[[Any], Any] = lambda v: v
    default: Any = _MISSING
    """What a state saved before the field existed means; without one the field is required."""


@dataclass(frozen=True)
class LoaderState:
    """Where a run is: the epoch and, per topology it ran with, the batches each rank delivered."""

    version: int
    epoch: int
    seed: int
    batch_size: int
    fingerprint: str
    generations: tuple[Generation, ...]
    revision: int = 0
    """The dataset revision (``index.json``'s ``revision``) the generations were served on."""
    carried: tuple[tuple[int, tuple[Generation, ...]], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The plain, JSON-safe form ``Loader.state_dict()`` returns (identical on every rank)."""
        return {f.name: f.dump(getattr(self, f.name)) for f in FIELDS}


FIELDS: tuple[Field, ...] = (
    Field("version", _whole(1, STATE_VERSION)),
    Field("epoch", _whole(0, MAX_EPOCH)),
    Field("seed", _whole(0, MAX_SEED)),
    Field("batch_size", _whole(1, MAX_BATCH_SIZE)),
    Field("fingerprint", _pattern(r"[0-9a-f]{16}", "16 hex digits (Loader.fingerprint())")),
    Field("generations", _generations, _dump_generations),
    Field("revision", _whole(0, MAX_REVISION), default=0),
    Field("carried", _carried, _dump_carried, default=()),
)
assert [f.name for f in FIELDS] == [f.name for f in dataclasses.fields(LoaderState)]


def parse_state(state: Any) -> LoaderState:
    """The checked :class:`LoaderState` of a ``state_dict()``; a :class:`StateError` names the first bad field."""
    if not isinstance(state, Mapping):
        raise StateError(f"loader state must be a mapping from Loader.state_dict(), got {_shown(state)}")
    version = state.get("version", _MISSING)
    if version is _MISSING:
        raise StateError("loader state field 'version' is missing (not a Loader.state_dict()?)")
    if version != STATE_VERSION:
        if type(version) is int and 1 <= version < STATE_VERSION:
            raise StateError(
                f"loader state field 'version' is {version}: saved by an older pass-wds whose fingerprint did not "
                f"cover the shards' content (this one reads version {STATE_VERSION}); restart the epoch"
            )
        raise StateError(f"loader state field 'version' must be {STATE_VERSION}, got {_shown(version)}")
    known = {f.name for f in FIELDS}
    for name in state:
        if name not in known:
            raise StateError(
                f"loader state field '{str(name)[:40]}' is unknown (known: {', '.join(sorted(known))})"
            )
    values: dict[str, Any] = {}
    for f in FIELDS:
        value = state.get(f.name, _MISSING)
        if value is _MISSING:
            if f.default is _MISSING:
                raise StateError(f"loader state field '{f.name}' is missing")
            values[f.name] = f.default
            continue
        values[f.name] = f.parse(value, f.name)
    return LoaderState(**values)


__all__ = ["FIELDS", "STATE_VERSION", "Field", "LoaderState", "StateError", "parse_state"]
