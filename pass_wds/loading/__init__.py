"""The loading stage: shards → exact, evenly split, deterministic, resumable batches for DDP training.

Modules: ``shards`` (discovery, ``.idx``, header scans), ``plan`` (pure epoch planning), ``stream`` (tar
streaming with ``.idx`` seeks), ``pipeline`` (shuffle buffer, decode, batching as IterableDatasets),
``quality`` (the shuffle-quality report) and ``loader`` (``make_loader`` / ``LoaderConfig`` / ``Loader``).
"""

from pass_wds.format.errors import ShardError
from pass_wds.format.manifest import ShardInfo
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
from pass_wds.loading.quality import ShuffleReport
from pass_wds.loading.shards import resolve_source
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
    "ShardInfo",
    "ShuffleReport",
    "batch_stream",
    "distributed_topology",
    "epoch_sequence",
    "fit_remainder",
    "make_loader",
    "read_samples",
    "reader_plan",
    "resolve_source",
    "shuffle_order",
    "stream_planned",
]
