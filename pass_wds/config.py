"""What every configuration shares: options declared once, YAML loading, dataclass building, sizes.

The configs themselves live with what they configure (``convert.options.ConvertConfig``,
``loading.LoaderConfig``) and map one-to-one onto the YAML files in ``configs/``. A YAML file gives defaults,
command-line flags override them; unknown YAML keys are an error (a typo in a config must not be silently
ignored).

How to add an option: add one field to the config dataclass, declared with :func:`option` (its type
annotation, default, help, and what it means: ``output=True`` when it changes what is produced,
``recorded=False`` when ``index.json`` must not keep it, ``minimum``/``maximum``/``choices``/``size``/
``pattern`` for its values, ``flag=""`` when it has no command-line flag). Its type and value checks (one
line naming the option), its ``make-shards`` flag, its place in the plan digest and in the recorded config,
and its line in the option table of a docstring follow from that; only a check that involves two options is
written by hand, in the config's ``validate_values``. One more edit for a loader option: its keyword in
``make_loader``'s explicit signature (``tests/test_options.py`` says so when it is missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pass_wds.errors import ConfigError

T = TypeVar("T")

RETRY_SECONDS = 120.0
"""Default ``retry_seconds`` of every config (the storage retry policy's budget, ``pass_wds.storage.retry``):
long enough to ride out a storage restart. Here, not in ``storage/``, so declaring options imports no fsspec."""
READ_TIMEOUT = 30.0
"""Default ``read_timeout``: a storage request with no answer or byte for this long is a failed try."""

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_size(value: str | int | float) -> int:
    """Parse ``256MB``, ``1.5GiB``, ``4096`` … into bytes (MB = 10**6, MiB = 2**20)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(f"size must be positive, got {value!r}")
        return int(value)
    m = _SIZE_RE.match(str(value))
    if not m or m.group(2) is None and not m.group(1):
        raise ConfigError(f"cannot parse {value!r} (examples: 256MB, 1GiB, 500000)")
    unit = (m.group(2) or "").lower()
    if unit not in _UNITS:
        raise ConfigError(f"unknown size unit in {value!r}")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ConfigError(f"size must be positive, got {value!r}")
    return n


# ------------------------------------------------------------------------------------ declared options


@dataclass(frozen=True)
class Option:
    """What a config field declares besides its type and default (both from the dataclass field itself)."""

    help: str
    output: bool = False
    """Changes what is produced: make-shards' bytes (so it is part of the plan digest), the loader's order."""
    recorded: bool = True
    """Kept in the config a run records (make-shards' ``index.json``); False for where or how it ran
    (engine, workers, progress), for the output location and for secrets (storage options)."""
    flag: str | None = None
    """The long flag when it is not ``--<name with dashes>``; ``""``: no flag (YAML and keywords only)."""
    short: str | None = None
    metavar: str | None = None
    positional: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[Any, ...] | None = None
    size: bool = False
    """A size such as ``256MB``, ``1GiB`` or a number of bytes (:func:`parse_size`)."""
    pattern: tuple[str, str] | None = None
    """``(regex, what it means)`` a string value must match in full."""


def option(
    default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None, **declared: Any
) -> Any:
    """A config field declared once: ``seed: int = option(0, "seed of the shuffle", output=True, minimum=0)``.

    The dataclass field's type and default are the option's; everything else derives from the declaration:
    type checks (:func:`check_options`), value checks, argparse flags (:func:`add_option_arguments`), which
    options change the output (:func:`option_names`), the recorded config and the option table of a
    docstring (:func:`option_table`)."""
    meta = {"option": Option(help, **declared)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Declared:
    """One declared option of a config class: name, type hint, default and declaration."""

    name: str
    hint: Any
    default: Any
    option: Option

    def shown(self, flags: bool) -> str:
        """How messages name it: ``--flag`` for a command's options, the field name for the loader's."""
        if not flags:
            return self.name
        return self.option.flag or f"--{self.name.replace('_', '-')}"


def declared(cls: type) -> list[Declared]:
    """The declared options of a config dataclass, in field order (cached per class)."""
    found = _DECLARED.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = []
        for f in dataclasses.fields(cls):
            opt = f.metadata.get("option")
            if opt is None:
                raise TypeError(f"{cls.__name__}.{f.name} is not declared with config.option()")
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            found.append(Declared(f.name, hints[f.name], default, opt))
        _DECLARED[cls] = found
    return found


_DECLARED: dict[type, list[Declared]] = {}


def option_names(cls: type, *, output: bool | None = None, recorded: bool | None = None) -> list[str]:
    """Names of the options of ``cls`` that change the output (``output=True``) or are recorded."""
    return [
        d.name
        for d in declared(cls)
        if (output is None or d.option.output == output)
        and (recorded is None or d.option.recorded == recorded)
    ]


def _accepts(hint: Any, value: Any) -> bool:
    """``value`` has the type ``hint`` says (unions, None, lists of …; ``bool`` is no integer: YAML makes
    ``yes`` True)."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return "a list" if item is Any else f"a list of {_type_name(item).split(' ', 1)[-1]}s"
    if origin is dict:
        return "a mapping"
    names = {int: "an integer", bool: "true or false", str: "a string", float: "a number", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_options(obj: Any, *, flags: bool) -> None:
    """Every declared option of a config, checked: its type first (``seed: abc``, ``batch_size: "8"``,
    ``slurm_cores: many``), then its declared range, choices, size or pattern. Each problem is one
    :class:`ConfigError` line naming the option (as a flag when ``flags``), before any work starts."""
    for d in declared(type(obj)):
        value = getattr(obj, d.name)
        name, opt = d.shown(flags), d.option
        if not _accepts(d.hint, value):
            raise ConfigError(f"{name} must be {_type_name(d.hint)}, got {_shown(value)}")
        if value is None:
            continue
        if opt.size:
            try:
                parse_size(value)
            except ConfigError as e:
                raise ConfigError(f"{name}: {e}") from None
        if opt.choices is not None and value not in opt.choices:
            *rest, last = (repr(c) for c in opt.choices)
            wanted = f"{', '.join(rest)} or {last}" if rest else last
            raise ConfigError(f"{name} must be {wanted}, got {value!r}")
        if opt.minimum is not None and opt.maximum is not None and not opt.minimum <= value <= opt.maximum:
            raise ConfigError(f"{name} must be in {opt.minimum}..{opt.maximum}, got {value}")
        if opt.minimum is not None and value < opt.minimum:
            raise ConfigError(f"{name} must be >= {opt.minimum}, got {value}")
        if opt.maximum is not None and value > opt.maximum:
            raise ConfigError(f"{name} must be <= {opt.maximum}, got {value}")
        if opt.pattern is not None and not re.fullmatch(opt.pattern[0], value):
            raise ConfigError(f"{name} must be {opt.pattern[1]}, got {value!r}")


def _scalar(hint: Any) -> Any:
    """The one non-None type of a hint (``int | None`` → int), or None when there are several."""
    args = [h for h in typing.get_args(hint) if h is not type(None)] if typing.get_args(hint) else [hint]
    return args[0] if len(args) == 1 else None


def add_option_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: Iterable[str] = ()) -> None:
    """One argparse argument per declared option of ``cls`` that has a flag: ``--name-with-dashes`` (or its
    declared flag and short form), typed from the field (``int`` options parse as integers; a ``bool``
    defaulting to False is a switch, any other ``bool`` gets ``--x/--no-x``), with the declared help, choices
    and metavar. Flags not given leave no value (``argparse.SUPPRESS``), so a YAML config underneath keeps
    its own."""
    skipped = set(skip)
    for d in declared(cls):
        opt = d.option
        if d.name in skipped or opt.flag == "":
            continue
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": opt.help}
        if opt.metavar:
            kw["metavar"] = opt.metavar
        if opt.positional:
            parser.add_argument(d.name, nargs="*", **kw)
            continue
        names = [n for n in (opt.short, d.shown(True)) if n]
        kind = _scalar(d.hint)
        if kind is bool:
            kw["action"] = "store_true" if d.default is False else argparse.BooleanOptionalAction
        elif kind is int:
            kw["type"] = int
        elif kind is float:
            kw["type"] = float
        if opt.choices is not None:
            kw["choices"] = opt.choices
        parser.add_argument(*names, **kw)


def option_table(cls: type) -> str:
    """The declared options of ``cls`` as a reStructuredText list for a docstring: name, type, default, help."""
    lines = []
    for d in declared(cls):
        default = "required" if d.default is dataclasses.MISSING else repr(d.default)
        lines.append(f"* ``{d.name}`` ({_type_name(d.hint)}; default {default}): {d.option.help}")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (empty file → ``{}``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of option names to values")
    return data


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Build a dataclass from a mapping, rejecting unknown keys with a clear message."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    normalised = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(normalised) - names)
    if unknown:
        raise ConfigError(f"unknown option(s) in {source}: {', '.join(unknown)}")
    return cls(**normalised)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
