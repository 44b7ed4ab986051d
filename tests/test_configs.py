"""Everything shipped in configs/ runs on the bundled sample (sample/: 38 images, 36 convert).

Each file has a check; a new file without one fails ``test_every_config_runs``. configs/pass.yaml names the
full release, so it is parsed into ConvertConfig and run with its inputs pointed at the sample.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pass_wds import ConvertConfig
from pass_wds.config import from_dict, load_yaml

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
SAMPLE = REPO / "sample"
SAMPLE_SAMPLES = 36  # 38 images, one corrupt, one without metadata (sample/README.md)
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _cli(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    code = "import sys; from pass_wds.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, env=ENV, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make demo` runs first: make-shards --config configs/sample.yaml (run from the repository)."""
    out = tmp_path_factory.mktemp("sample") / "out"
    proc = _cli("make-shards", "--config", "configs/sample.yaml", "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _totals(out: Path) -> int:
    index = json.loads((out / "index.json").read_text())
    return sum(s["nsamples"] for s in index["shardlist"])


def check_sample_yaml(path: Path, out: Path, tmp: Path) -> None:
    assert _totals(out) == SAMPLE_SAMPLES
    assert len(list(out.glob("pass-*.tar"))) == 5
    proc = _cli("verify", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def check_pass_yaml(path: Path, out: Path, tmp: Path) -> None:
    from pass_wds import make_shards

    data = load_yaml(path)
    assert data["inputs"] == ["PASS.{0..9}.tar"] and data["metadata"] == "pass_metadata.csv"
    data.update(
        inputs=[str(SAMPLE / "PASS.{0..1}.tar")],
        metadata=str(SAMPLE / "pass_metadata.csv"),
        output=str(tmp / "pass"),
        shard_size="400KB",  # the sample is 1.7 MB; 256MB would make one shard
        workers=2,
        progress=False,
    )
    cfg = from_dict(ConvertConfig, data, source=str(path))
    summary = make_shards(cfg)
    assert _totals(tmp / "pass") == SAMPLE_SAMPLES, summary.lines()
    errors = [json.loads(line)["reason"] for line in (tmp / "pass" / "errors.jsonl").read_text().splitlines()]
    assert sorted(errors) == ["corrupt", "missing-metadata"]  # validate: true found the truncated JPEG


def check_loader_yaml(path: Path, out: Path, tmp: Path) -> None:
    from pass_wds import LoaderConfig

    cfg = LoaderConfig.from_yaml(path, source=str(out / "index.json"))
    loader = cfg.build()
    batches = list(loader)
    assert len(batches) == SAMPLE_SAMPLES // cfg.batch_size >= 1
    keys = [k for b in batches for k in b["__key__"]]
    assert len(keys) == len(set(keys)) == len(batches) * cfg.batch_size
    assert all(v.shape[0] == cfg.batch_size for b in batches for v in b["views"])


def check_train_ssl_yaml(path: Path, out: Path, tmp: Path) -> None:
    """The training command of docs/loader.md, as written there (two ranks, the whole configured run)."""
    cmd = [
        sys.executable, str(REPO / "scripts" / "train_ssl.py"), "--nproc-per-node", "2", "--config", str(path),
        "--source", str(out / "index.json"), "--output-dir", str(tmp / "run"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=ENV, cwd=tmp, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "Traceback" not in proc.stderr
    assert "done: 20 steps" in proc.stderr  # 20 epochs x 1 step of 2 ranks x 18
    assert (tmp / "run" / "checkpoint.pt").is_file() and "step 20" in (tmp / "run" / "train.log").read_text()
    # The demo shows learning (issue 20 item 5): the chance levels are printed, and the last log interval is
    # well below the chance loss ln(35) and well above the chance pair accuracy 1/35.
    assert "loss 3.555 = ln(35) and pair acc 2.9% = 1/35" in proc.stderr
    done = re.search(
        r"loss ([\d.]+) -> ([\d.]+) \(chance 3\.555\), pair acc (\d+)% -> (\d+)% \(chance 2\.9%\)",
        proc.stderr,
    )
    assert done, proc.stderr[-3000:]
    first_loss, last_loss, first_acc, last_acc = (float(g) for g in done.groups())
    assert last_loss < 0.85 * 3.555 and last_loss < first_loss, done.group(0)
    assert last_acc >= 5 * 2.9 and last_acc > first_acc, done.group(0)


def check_recipe_yaml(path: Path, out: Path, tmp: Path) -> None:
    from pass_wds.loading import make_loader

    loader = make_loader(str(out / "index.json"), batch_size=4, recipe=str(path), num_workers=0)
    batch = next(iter(loader))
    images = batch.get("views") or [batch["image"]]
    assert all(v.shape[0] == 4 and v.shape[1] == 3 for v in images)


def check_dask_slurm_yaml(path: Path, out: Path, tmp: Path) -> None:
    """Its Slurm job options reach dask-jobqueue's sbatch script (no job is submitted: no Slurm here), and the
    conversion it describes runs on a Dask LocalCluster with its inputs pointed at the sample."""
    from pass_wds import make_shards
    from pass_wds.convert.executors import slurm_cluster

    data = load_yaml(path)
    cluster = slurm_cluster(from_dict(ConvertConfig, data, source=str(path)))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in (
        "#SBATCH -p cpu",
        "#SBATCH -A my-project",
        "#SBATCH -t 02:00:00",
        "#SBATCH --constraint=intel",
    ):
        assert line in script, script
    assert "--nworkers 8" in script and "--nthreads 1" in script, script
    local = {k: v for k, v in data.items() if not k.startswith("slurm_")}
    local.update(
        inputs=[str(SAMPLE / "PASS.{0..1}.tar")],
        metadata=str(SAMPLE / "pass_metadata.csv"),
        output=str(tmp / "dask"),
        shard_size="400KB",
        cluster="local",
        workers=2,
        progress=False,
    )
    make_shards(from_dict(ConvertConfig, local, source=str(path)))
    assert _totals(tmp / "dask") == SAMPLE_SAMPLES


def _checker(rel: str) -> Callable[[Path, Path, Path], None] | None:
    named = {
        "sample.yaml": check_sample_yaml,
        "pass.yaml": check_pass_yaml,
        "loader.yaml": check_loader_yaml,
        "train_ssl.yaml": check_train_ssl_yaml,
        "dask-slurm.yaml": check_dask_slurm_yaml,
    }
    if rel.startswith("recipes/") and rel.endswith(".yaml"):
        return check_recipe_yaml
    return named.get(rel)


SHIPPED = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*") if p.is_file())


@pytest.mark.timeout(400)
@pytest.mark.parametrize("rel", SHIPPED)
def test_every_config_runs(rel: str, sample_out: Path, tmp_path: Path) -> None:
    check = _checker(rel)
    assert check is not None, f"configs/{rel} is shipped but tests/test_configs.py has no check for it"
    check(CONFIGS / rel, sample_out, tmp_path)
