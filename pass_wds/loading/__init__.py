"""The loading stage: shards → exact, evenly split, deterministic, resumable batches for DDP training.

Modules: ``shards`` (discovery, ``.idx``, header scans), ``plan`` (pure epoch planning), ``stream`` (tar
streaming with ``.idx`` seeks), ``pipeline`` (shuffle buffer, decode, batching as IterableDatasets) and
``loader`` (``make_loader`` / ``LoaderConfig`` / ``Loader``).
"""

from pass_wds.loading.loader import Loader, LoaderConfig, LoaderStats, distributed_topology, make_loader
from pass_wds.loading.pipeline import (
    EpochJob,
    PlannedBatches,
    PlannedSamples,
    SampleError,
    batch_stream,
    reader_plan,
    stream_planned,
)
from pass_wds.loading.plan import (
    EpochPlanner,
    Generation,
    GenerationPlan,
    PlanParams,
    epoch_sequence,
    fit_remainder,
    shuffle_order,
)
from pass_wds.loading.shards import (
    ShardError,
    ShardIndex,
    ShardInfo,
    iter_tar_samples,
    parse_idx,
    resolve_source,
    scan_tar,
    split_key,
)
from pass_wds.loading.stream import IndexCache, read_samples

__all__ = [
    "EpochJob",
    "EpochPlanner",
    "Generation",
    "GenerationPlan",
    "IndexCache",
    "Loader",
    "LoaderConfig",
    "LoaderStats",
    "PlanParams",
    "PlannedBatches",
    "PlannedSamples",
    "SampleError",
    "ShardError",
    "ShardIndex",
    "ShardInfo",
    "batch_stream",
    "distributed_topology",
    "epoch_sequence",
    "fit_remainder",
    "iter_tar_samples",
    "make_loader",
    "parse_idx",
    "read_samples",
    "reader_plan",
    "resolve_source",
    "scan_tar",
    "shuffle_order",
    "split_key",
    "stream_planned",
]
