"""Options of ``make-shards``: :class:`ConvertConfig` (↔ ``configs/pass.yaml``, ``configs/sample.yaml``), its
value checks, and which options change the output (the plan digest) or stay out of the recorded config."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pass_wds import storage
from pass_wds.config import ConfigError, check_seconds, check_types, parse_size, to_dict


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
    retry_seconds: float = storage.RETRY_SECONDS  # transient storage failures are retried this long
    read_timeout: float = storage.READ_TIMEOUT  # no answer or byte from storage for this long is a failed try
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
        check_seconds("--retry-seconds", self.retry_seconds)
        check_seconds("--read-timeout", self.read_timeout, positive=True)

    @property
    def retry(self) -> storage.RetryPolicy:
        """The retry policy of every read of inputs, metadata and the output's own state."""
        return storage.RetryPolicy.of(self.retry_seconds, self.read_timeout)

    @property
    def shard_bytes(self) -> int:
        return parse_size(self.shard_size)

    @property
    def reencode(self) -> bool:
        return self.resize_max_side is not None or self.quality is not None


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
    "retry_seconds": (int, float),
    "read_timeout": (int, float),
}


OUTPUT_OPTIONS = (
    "name",
    "key_column",
    "shard_size",
    "max_count",
    "seed",
    "validate",
    "allow_missing_metadata",
    "resize_max_side",
    "quality",
    "max_image_pixels",
    "creator_column",
)
"""Options that change the bytes of the output (part of the plan digest); anything else (workers, progress,
the engine …) may differ on resume."""

_NOT_RECORDED = (
    "storage_options",
    "overwrite",
    "progress",
    "output",
    "workers",
    "shard_range",
    "retry_seconds",
    "read_timeout",
)
_ENGINE_OPTIONS = ("scheduler", "cluster")


def output_options(cfg: ConvertConfig) -> dict[str, Any]:
    """The options that go into the plan digest, with the target size in bytes."""
    d = to_dict(cfg)
    return {k: d[k] for k in OUTPUT_OPTIONS} | {"shard_bytes": cfg.shard_bytes}


def recorded_config(cfg: ConvertConfig) -> dict[str, Any]:
    """The config recorded in ``index.json``: what was made, not where or how it ran (no storage options,
    workers, engine or Slurm options: a Dask run's index.json is a local one's), input URLs redacted."""
    config = to_dict(cfg)
    for private in _NOT_RECORDED:
        config.pop(private, None)
    for engine in [k for k in config if k in _ENGINE_OPTIONS or k.startswith("slurm_")]:
        config.pop(engine)
    config["inputs"] = [storage.redact(i) for i in cfg.inputs]
    config["metadata"] = storage.redact(cfg.metadata) if cfg.metadata else None
    return config
