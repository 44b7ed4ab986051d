"""What every configuration shares: YAML loading, dataclass building, type checks and sizes.

The configs themselves live with what they configure (``convert.options.ConvertConfig``,
``loading.LoaderConfig``) and map one-to-one onto the YAML files in ``configs/``. A YAML file gives defaults,
command-line flags override them; unknown YAML keys are an error (a typo in a config must not be silently
ignored).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

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


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the problem in one line."""


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


_TYPE_NAMES = {int: "an integer", bool: "true or false", str: "a string", list: "a list", dict: "a mapping"}


def check_types(obj: Any, types: dict[str, tuple[Any, ...]]) -> None:
    """A YAML value of the wrong type (``seed: abc``, ``validate: 'no'``) is a one-line error naming the option,
    not a ``TypeError`` deep inside the run. ``bool`` is not an integer here (YAML turns ``yes`` into True)."""
    for name, accepted in types.items():
        value = getattr(obj, name)
        ok = any(
            (value is None)
            if t is None
            else (isinstance(value, t) and not (t is int and isinstance(value, bool)))
            for t in accepted
        )
        if ok and isinstance(value, list):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            wanted = " or ".join(_TYPE_NAMES.get(t, "null") if t is not None else "null" for t in accepted)
            if list in accepted:
                wanted = wanted.replace("a list", "a list of strings")
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ConfigError(f"--{name.replace('_', '-')} must be {wanted}, got {shown}")


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


def check_seconds(name: str, value: Any, *, positive: bool = False) -> None:
    """One line for a duration option (``retry_seconds``, ``read_timeout``) that is not a number of seconds
    ``>= 0`` (``> 0`` when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if value < 0 or positive and value == 0:
        raise ConfigError(f"{name} must be {'> 0' if positive else '>= 0'} seconds, got {value}")


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
