"""Dataclass configs that map one-to-one onto the YAML files in ``configs/``.

A YAML file gives defaults, command-line flags override them; unknown YAML keys are an error (a typo in a
config must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
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


@dataclass
class ConvertConfig:
    """Options of ``make-shards``. Field names are the YAML keys and the long flags (``_`` → ``-``)."""

    inputs: list[str] = field(default_factory=list)
    metadata: str | None = None
    output: str | None = None
    key_column: str = "hash"
    name: str = "pass"
    shard_size: str = "256MB"
    max_count: int | None = None
    seed: int = 0
    workers: int = 1
    validate: bool = True
    allow_missing_metadata: bool = False
    overwrite: bool = False
    resize_max_side: int | None = None
    quality: int | None = None  # re-encode as JPEG at this quality (95 when only resizing)
    creator_column: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    max_image_pixels: int = 89_478_485  # Pillow's default decompression-bomb threshold
    progress: bool | None = None  # None: a bar on a terminal, log lines otherwise
    shard_range: str | None = None  # "START:END": write only these shards (one Slurm array task); no manifest
    # Execution engine (pass_wds.executors); none of these changes the output's bytes.
    scheduler: str | None = None  # address of a running Dask scheduler (tcp://host:8786)
    cluster: str | None = None  # start a Dask cluster: "local" (--workers processes) or "slurm"
    slurm_cores: int | None = None  # per Slurm job (dask-jobqueue SLURMCluster)
    slurm_memory: str | None = None  # per Slurm job, e.g. "16GB"
    slurm_walltime: str | None = None  # e.g. "02:00:00"
    slurm_queue: str | None = None  # partition
    slurm_account: str | None = None
    slurm_processes: int | None = None  # Dask workers per job (default: dask-jobqueue's choice)
    slurm_job_extra: list[str] | None = None  # extra #SBATCH lines, e.g. ["--constraint=cpu"]

    def shard_bounds(self) -> tuple[int, int] | None:
        """``shard_range`` parsed into ``(start, end)`` (end exclusive), or None."""
        if self.shard_range is None:
            return None
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(self.shard_range))
        if not m or int(m.group(1)) >= int(m.group(2)):
            raise ConfigError(f"--shard-range must be START:END with START < END, got {self.shard_range!r}")
        return int(m.group(1)), int(m.group(2))

    def validate_values(self) -> None:
        """Every option, checked before any input is read: a late refusal at PASS scale costs an hour."""
        check_types(self, _CONVERT_TYPES)
        if not self.inputs:
            raise ConfigError("no inputs given (pass raw tars, globs, brace patterns or image folders)")
        if not self.output:
            raise ConfigError("--output is required")
        try:
            parse_size(self.shard_size)
        except ConfigError as e:
            raise ConfigError(f"--shard-size: {e}") from None
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        if self.max_image_pixels < 1:
            raise ConfigError(f"--max-image-pixels must be >= 1, got {self.max_image_pixels}")
        if self.max_count is not None and self.max_count < 1:
            raise ConfigError(f"--max-count must be >= 1, got {self.max_count}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ConfigError(f"--name must be letters, digits, '_' or '-', got {self.name!r}")
        if self.resize_max_side is not None and self.resize_max_side < 1:
            raise ConfigError(f"--resize-max-side must be >= 1, got {self.resize_max_side}")
        self.shard_bounds()
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be in 1..100, got {self.quality}")

    @property
    def shard_bytes(self) -> int:
        return parse_size(self.shard_size)

    @property
    def reencode(self) -> bool:
        return self.resize_max_side is not None or self.quality is not None


_TYPE_NAMES = {int: "an integer", bool: "true or false", str: "a string", list: "a list", dict: "a mapping"}
# option → accepted types (None: may be null); lists hold strings
_CONVERT_TYPES: dict[str, tuple[Any, ...]] = {
    "inputs": (list, str),
    "metadata": (str, None),
    "output": (str, None),
    "key_column": (str,),
    "name": (str,),
    "shard_size": (str, int),
    "max_count": (int, None),
    "seed": (int,),
    "workers": (int,),
    "validate": (bool,),
    "allow_missing_metadata": (bool,),
    "overwrite": (bool,),
    "resize_max_side": (int, None),
    "quality": (int, None),
    "creator_column": (str, None),
    "storage_options": (dict,),
    "max_image_pixels": (int,),
    "progress": (bool, None),
    "shard_range": (str, None),
}


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
