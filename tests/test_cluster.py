"""The cluster walk, simulated on one machine: two torchrun agents (``--nnodes 2``, c10d rendezvous on
loopback, 2 ranks each) stream a make-shards output from a real S3 server (moto), each "node" through its
own node-local cache folder and its own proxy in front of the server, so the requests of each node are
counted exactly. Then one node resumes rank 0's state with 3 ranks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOutputs
from servers import Bucket, FaultProxy, free_port

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "ddp" / "run_loader.py"
N = 40  # samples; 4 ranks x batch 2 = 8 a step: 5 steps an epoch, nothing dropped
K = 2  # steps of epoch 0 delivered before the resume: 24 samples left = 3 ranks x batch 2 x 4 steps


def _agent(spec: list[dict[str, Any]], out: Path, *, nnodes: int, nproc: int, endpoint: str, host: bool,
           node_rank: int) -> subprocess.Popen[str]:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / f"spec-node{node_rank}.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc_per_node", str(nproc),
        "--node_rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
        "--rdzv-id", "walk", "--rdzv-conf", f"is_host={str(host).lower()}", "--max-restarts", "0",
        str(WORKER), str(spec_file), str(out),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(procs: list[subprocess.Popen[str]]) -> None:
    outs = [p.communicate(timeout=240)[0] for p in procs]
    for p, text in zip(procs, outs, strict=True):
        assert p.returncode == 0, text[-6000:]


def _tar_gets(proxy: FaultProxy) -> Counter[str]:
    return Counter(path.rsplit("/", 1)[-1] for path, _ in proxy.gets() if path.endswith(".tar"))


def _results(out: Path, name: str, ranks: int) -> list[dict[str, Any]]:
    return [json.loads((out / f"{name}.rank{r}.json").read_text()) for r in range(ranks)]


@pytest.mark.timeout(600)
def test_two_nodes_stream_from_s3_once_per_node_and_one_node_resumes(
    s3: Bucket, fault_proxy: Any, fake_outputs: FakeOutputs, tmp_path: Path
) -> None:
    local = fake_outputs.small_output("300KB", n_images=N)
    index = json.loads((local / "index.json").read_text())
    shards = [s["url"] for s in index["shardlist"]]
    assert sum(s["nsamples"] for s in index["shardlist"]) == N and len(shards) >= 4
    for f in sorted(local.iterdir()):
        if f.is_file():
            s3.put(f"pass/{f.name}", f.read_bytes())
    upstream = s3.storage_options["client_kwargs"]["endpoint_url"]
    proxies = [fault_proxy(upstream), fault_proxy(upstream)]  # one per node: exact per-node counts

    def scenario(node: int, name: str, **kw: Any) -> dict[str, Any]:
        so = {**s3.storage_options, "client_kwargs": {**s3.storage_options["client_kwargs"]}}
        so["client_kwargs"]["endpoint_url"] = proxies[node].url
        return {"name": name, "source": f"{s3.url}/pass/index.json", "batch_size": 2, "num_workers": 2,
                "segment_samples": 3, "shuffle_buffer_bytes": 20_000, "storage_options": so,
                "cache_dir": str(tmp_path / f"node{node}-cache"), **kw}  # fmt: skip

    out = tmp_path / "run"
    endpoint = f"127.0.0.1:{free_port()}"
    _wait(
        [
            _agent(
                [scenario(n, "walk", epochs=[0, 1])],
                out,
                nnodes=2,
                nproc=2,
                endpoint=endpoint,
                host=n == 0,
                node_rank=n,
            )  # fmt: skip
            for n in (0, 1)
        ]
    )
    res = _results(out, "walk", 4)
    nodes = [r["node"]["group_rank"] for r in res]
    assert sorted(nodes) == ["0", "0", "1", "1"], nodes  # 2 ranks on each agent
    keys_by_epoch = []
    for e in ("0", "1"):
        assert [len(r["batches"][e]) for r in res] == [5, 5, 5, 5]  # equal batches on every rank
        seen = [k for r in res for b in r["batches"][e] for k in b]
        assert len(seen) == len(set(seen)) == N and not res[0]["dropped"][e]  # every sample exactly once
        keys_by_epoch.append(seen)
    assert sorted(keys_by_epoch[0]) == sorted(keys_by_epoch[1])
    first = [_tar_gets(p) for p in proxies]
    before = [len(p.requests) for p in proxies]
    for gets in first:
        assert gets and max(gets.values()) == 1, gets  # each shard at most once per node, over both epochs
    assert set(first[0]) | set(first[1]) == set(shards)
    for n in (0, 1):
        cached = [p.name for p in (tmp_path / f"node{n}-cache").iterdir() if p.name.endswith(".tar")]
        assert sorted(name.split("-", 1)[1] for name in cached) == sorted(first[n])

    # rank 0's state after K steps of epoch 0 (the same on every rank) → one node, 3 ranks: the unseen rest
    state = res[0]["states"]["0"][K - 1]
    assert all(r["states"]["0"][K - 1] == state for r in res)
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(state))
    resumed = tmp_path / "resumed"
    _wait(
        [
            _agent(
                [scenario(0, "resume", epochs=[0], resume=str(state_file))],
                resumed,
                nnodes=1,
                nproc=3,
                endpoint=f"127.0.0.1:{free_port()}",
                host=True,
                node_rank=0,
            )  # fmt: skip
        ]
    )
    rest = _results(resumed, "resume", 3)
    delivered = {k for r in res for b in r["batches"]["0"][:K] for k in b}
    later = [k for r in rest for b in r["batches"]["0"] for k in b]
    assert [len(r["batches"]["0"]) for r in rest] == [4, 4, 4]
    assert len(later) == len(set(later)) == N - 4 * 2 * K and not rest[0]["dropped"]["0"]
    assert set(later) == set(keys_by_epoch[0]) - delivered
    again = _tar_gets(proxies[0]) - first[0]
    assert all(first[0][s] + again[s] <= 1 for s in again), again  # the node's cache still serves it
    for n, proxy in enumerate(proxies):  # shown with pytest -s
        for what, reqs in (
            ("2 epochs", proxy.requests[: before[n]]),
            ("resume", proxy.requests[before[n] :]),
        ):
            kinds = Counter(f"{m} .{path.rsplit('.', 1)[-1]}" for m, path, _ in reqs)
            print(f"node {n}, {what}: {len(shards)} shards; requests {dict(sorted(kinds.items()))}")


def test_the_sbatch_script_in_docs_parses() -> None:
    """docs/cluster.md's sbatch script: valid bash, and torchrun and train_ssl.py accept its options."""
    from torch.distributed.run import parse_args as torchrun_args

    spec = importlib.util.spec_from_file_location("train_ssl", REPO / "scripts" / "train_ssl.py")
    assert spec is not None and spec.loader is not None
    train_ssl = importlib.util.module_from_spec(spec)  # a script, not a package: loaded from its file
    spec.loader.exec_module(train_ssl)

    doc = (REPO / "docs" / "cluster.md").read_text()
    script = re.search(r"## An sbatch script.*?```bash\n(.*?)```", doc, flags=re.S).group(1)  # type: ignore[union-attr]
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert script.startswith("#!/bin/bash\n#SBATCH")
    words = shlex.split(script.split("srun ", 1)[1].replace("\\\n", " "), comments=True)
    launch = torchrun_args(words[words.index("torchrun") + 1 :])
    assert launch.rdzv_backend == "c10d" and launch.rdzv_endpoint == "$MASTER:29500"
    args = train_ssl.parse_args(launch.training_script_args)
    assert args.cache_dir and args.output_dir == "/shared/runs/pass-ssl" and args.source.startswith("s3://")
