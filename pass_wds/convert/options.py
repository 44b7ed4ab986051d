"""Options of ``make-shards``: :class:`ConvertConfig` (↔ ``configs/pass.yaml``, ``configs/sample.yaml``), its
value checks, and which options change the output (the plan digest) or stay out of the recorded config."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pass_wds.config import (
    READ_TIMEOUT,
    RETRY_SECONDS,
    ConfigError,
    check_options,
    option,
    option_names,
    parse_size,
    to_dict,
)

if TYPE_CHECKING:
    from pass_wds.storage.retry import RetryPolicy


@dataclass
class ConvertConfig:
    """Options of ``make-shards``. Field names are the YAML keys and the long flags (``_`` → ``-``); each is
    declared once here (see :func:`pass_wds.config.option`): its type check, value check, flag, whether it is
    part of the plan digest and whether ``index.json`` records it all derive from the declaration."""

    inputs: list[str] = option(
        factory=list,
        help="raw tar archives, image folders, globs or brace patterns ('PASS.{0..9}.tar'); local or fsspec URLs",
        positional=True,
        metavar="INPUT",
    )
    metadata: str | None = option(
        None,
        "metadata (CSV, TSV, JSON Lines, JSON, Parquet): the allowlist, joined on --key-column",
        short="-m",
        metavar="FILE",
    )
    output: str | None = option(
        None, "output folder or URL (s3://bucket/prefix)", short="-o", metavar="DIR", recorded=False
    )
    key_column: str = option(
        "hash", "metadata column matching image file name stems (default: hash)", output=True
    )
    name: str = option(
        "pass",
        "shard name prefix: NAME-000000.tar … (default: pass)",
        output=True,
        pattern=(r"[A-Za-z0-9_-]+", "letters, digits, '_' or '-'"),
    )
    shard_size: str | int = option(
        "256MB",
        "target shard size, e.g. 256MB, 1GiB (default: 256MB)",
        output=True,
        size=True,
        metavar="SIZE",
    )
    max_count: int | None = option(None, "at most N samples per shard", output=True, minimum=1, metavar="N")
    seed: int = option(0, "seed of the global shuffle (default: 0)", output=True, minimum=0)
    workers: int = option(
        1,
        "parallel processes (default: 1); with --cluster, Dask workers",
        short="-j",
        metavar="N",
        minimum=1,
        recorded=False,
    )
    validate: bool = option(
        True, "fully decode every image and reject broken ones (default: on)", output=True
    )
    allow_missing_metadata: bool = option(
        False, "keep images that have no metadata row (default: reject them)", output=True
    )
    overwrite: bool = option(
        False, "replace an existing output made with other inputs or options", recorded=False
    )
    resize_max_side: int | None = option(
        None,
        "re-encode: shrink so the long side is at most N px (EXIF orientation applied first)",
        output=True,
        minimum=1,
        metavar="N",
    )
    quality: int | None = option(
        None,
        "re-encode as JPEG with quality Q (default when resizing: 95)",
        output=True,
        minimum=1,
        maximum=100,
        metavar="Q",
    )
    creator_column: str | None = option(
        None, "metadata column naming the creator to credit (default: auto, e.g. unickname)", output=True
    )
    dataset_version: str | None = option(
        None,
        "the dataset version recorded in index.json, e.g. v3 (make-shards update records later ones)",
        metavar="NAME",
        recorded=False,  # a field of index.json itself, not of its recorded config; the shards do not depend on it
    )
    storage_options: dict[str, Any] = option(
        factory=dict,
        help="fsspec storage options (flag: --storage-options JSON); never recorded: they may hold secrets",
        flag="",
        recorded=False,
    )
    max_image_pixels: int = option(
        89_478_485,
        "reject larger images as decompression bombs (default: Pillow's 89,478,485)",
        output=True,
        minimum=1,
        metavar="N",
    )
    progress: bool | None = option(
        None, "progress bar (default: on a terminal; plain log lines otherwise)", recorded=False
    )
    shard_range: str | None = option(
        None,
        "write only shards START..END-1 and no manifest (one task of a Slurm array); "
        "then run once without it to finish",
        metavar="START:END",
        recorded=False,
    )
    retry_seconds: float = option(
        RETRY_SECONDS,
        "retry transient storage failures (refused or reset connections, timeouts, 5xx, 429, SlowDown) for up "
        f"to S seconds without progress before giving up; 0: never (default: {RETRY_SECONDS:g})",
        metavar="S",
        minimum=0,
        recorded=False,
    )
    read_timeout: float = option(
        READ_TIMEOUT,
        f"a storage request with no answer or byte for S seconds is a failed try (default: {READ_TIMEOUT:g})",
        metavar="S",
        recorded=False,
    )
    # Execution engine (pass_wds.convert.executors): where it ran is not part of what was made, so none of
    # these changes the output's bytes or is recorded (a Dask run's index.json is a local one's).
    scheduler: str | None = option(
        None,
        "run the tasks on a running Dask cluster, e.g. tcp://host:8786 (needs pass-wds[dask])",
        metavar="ADDRESS",
        recorded=False,
    )
    cluster: str | None = option(
        None,
        "start a Dask cluster: 'local' (--workers processes here) or 'slurm' (dask-jobqueue; the "
        "slurm_* job options come from --config, see configs/dask-slurm.yaml)",
        choices=("local", "slurm"),
        recorded=False,
    )
    slurm_cores: int | None = option(
        None, "cores per Slurm job (dask-jobqueue SLURMCluster)", flag="", recorded=False
    )
    slurm_memory: str | None = option(None, 'memory per Slurm job, e.g. "16GB"', flag="", recorded=False)
    slurm_walltime: str | None = option(
        None, 'walltime of a Slurm job, e.g. "02:00:00"', flag="", recorded=False
    )
    slurm_queue: str | None = option(None, "Slurm partition", flag="", recorded=False)
    slurm_account: str | None = option(None, "Slurm account", flag="", recorded=False)
    slurm_processes: int | None = option(
        None, "Dask workers per Slurm job (default: dask-jobqueue's choice)", flag="", recorded=False
    )
    slurm_job_extra: list[str] | None = option(
        None, 'extra #SBATCH lines, e.g. ["--constraint=cpu"]', flag="", recorded=False
    )

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):  # one input given as a string (YAML, a keyword): a list of one
            self.inputs = [self.inputs]

    def shard_bounds(self) -> tuple[int, int] | None:
        """``shard_range`` parsed into ``(start, end)`` (end exclusive), or None."""
        if self.shard_range is None:
            return None
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(self.shard_range))
        if not m or int(m.group(1)) >= int(m.group(2)):
            raise ConfigError(f"--shard-range must be START:END with START < END, got {self.shard_range!r}")
        return int(m.group(1)), int(m.group(2))

    def validate_values(self) -> None:
        """Every option, checked before any input is read (a late refusal at PASS scale costs an hour): the
        declared types and values, then what no single declaration says."""
        check_options(self, flags=True)
        if not self.inputs:
            raise ConfigError("no inputs given (pass raw tars, globs, brace patterns or image folders)")
        if not self.output:
            raise ConfigError("--output is required")
        self.shard_bounds()
        if self.dataset_version is not None and not 0 < len(self.dataset_version) <= 200:
            raise ConfigError("--dataset-version must be 1 to 200 characters")
        if self.read_timeout <= 0:
            raise ConfigError(f"--read-timeout must be > 0 seconds, got {self.read_timeout}")

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every read of inputs, metadata and the output's own state."""
        from pass_wds.storage.retry import RetryPolicy  # here: declaring the options imports no fsspec

        return RetryPolicy.of(self.retry_seconds, self.read_timeout)

    @property
    def shard_bytes(self) -> int:
        return parse_size(self.shard_size)

    @property
    def reencode(self) -> bool:
        return self.resize_max_side is not None or self.quality is not None


OUTPUT_OPTIONS = tuple(option_names(ConvertConfig, output=True))
"""Options that change the bytes of the output (part of the plan digest); anything else (workers, progress,
the engine …) may differ on resume. Derived from the declarations (``output=True``)."""


def output_options(cfg: ConvertConfig) -> dict[str, Any]:
    """The options that go into the plan digest, with the target size in bytes."""
    d = to_dict(cfg)
    return {k: d[k] for k in option_names(type(cfg), output=True)} | {"shard_bytes": cfg.shard_bytes}


def recorded_config(cfg: ConvertConfig) -> dict[str, Any]:
    """The config recorded in ``index.json``: what was made, not where or how it ran (no storage options,
    workers, engine or Slurm options: a Dask run's index.json is a local one's), input URLs redacted."""
    from pass_wds import storage  # here: importing the options (the CLI, ``import pass_wds``) stays cheap

    config = to_dict(cfg)
    for private in option_names(type(cfg), recorded=False):
        config.pop(private, None)
    config["inputs"] = [storage.redact(i) for i in cfg.inputs]
    config["metadata"] = storage.redact(cfg.metadata) if cfg.metadata else None
    return config
