"""torchrun worker for the loader tests: runs the scenarios of a JSON spec and writes what each rank saw.

Usage: PYTHONPATH=.:tests torchrun --nproc_per_node N tests/ddp/run_loader.py SPEC.json OUTDIR

Each scenario: {"name", "source", "batch_size", "num_workers", "seed", "remainder", "epochs": [...],
"segment_samples", "shuffle_buffer_bytes", "recipe": null | "tiny", "resume": STATE.json | null,
"storage_options", "cache_dir", "across_revisions"} (storage_options and cache_dir per node in the multi-node test: each agent gets its own spec).
Per rank it writes OUTDIR/<name>.rank<r>.json with per-epoch len, batch keys, the state_dict after every
batch, the dropped keys and the loader stats. Every batch also does a gloo all_reduce, as DDP would.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from shardkit import TinyRecipe  # tests/shardkit.py: the launching test puts tests/ on PYTHONPATH

from pass_wds.loading import make_loader


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for sc in spec:
        loader = make_loader(
            sc["source"],
            batch_size=sc["batch_size"],
            num_workers=sc.get("num_workers", 2),
            seed=sc.get("seed", 0),
            remainder=sc.get("remainder", "drop"),
            segment_samples=sc.get("segment_samples", 4),
            shuffle_buffer_bytes=sc.get("shuffle_buffer_bytes", 4000),
            recipe=TinyRecipe() if sc.get("recipe") == "tiny" else None,
            storage_options=sc.get("storage_options"),
            cache_dir=sc.get("cache_dir"),
            across_revisions=sc.get("across_revisions", False),
        )
        if sc.get("resume"):
            loader.load_state_dict(json.loads(Path(sc["resume"]).read_text()))
        result: dict[str, dict[str, object]] = {"len": {}, "batches": {}, "states": {}, "dropped": {}}
        for epoch in sc["epochs"]:
            loader.set_epoch(epoch)
            e = str(epoch)
            result["len"][e] = len(loader)
            batches, states = [], []
            for batch in loader:
                batches.append(batch["__key__"])
                if "image" in batch:
                    assert batch["image"].shape[0] == sc["batch_size"]
                t = torch.ones(1)
                dist.all_reduce(t)  # a rank with fewer batches would hang here
                states.append(loader.state_dict())
            result["batches"][e] = batches
            result["states"][e] = states
            result["dropped"][e] = loader.dropped_keys
        result["stats"] = {"errors": loader.stats.errors, "substituted": loader.stats.substituted}
        result["node"] = {
            "group_rank": os.environ.get("GROUP_RANK"),
            "local_rank": os.environ.get("LOCAL_RANK"),
        }
        (out / f"{sc['name']}.rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
