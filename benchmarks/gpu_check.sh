#!/usr/bin/env bash
# GPU benchmarks on a bare machine with this repository checked out and torch + torchvision preinstalled.
# Runs in under 5 minutes; writes everything to $OUT (default ./gpu-out):
#   gpu.json          device-stage colour throughput at batch 256 per recipe + end-to-end images/s into a
#                     tiny SimCLR training step (benchmarks/bench_gpu.py)
#   cli_bench.json    `pass-wds bench … --recipe simclr --device cuda` (throughput + per-stage time)
#   gpu_check.log     the whole output;  nvidia-smi.txt
# Needs, besides torch/torchvision: numpy pillow pyyaml fsspec pyarrow tqdm psutil braceexpand. Missing ones
# are installed from ./.whl/*.whl when present (offline machines), else from the package index.
# Usage: OUT=/tmp/gpu-out bash benchmarks/gpu_check.sh      (then copy $OUT/gpu.json to benchmarks/results/)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu-out}"
PY="${PY:-python3}"
IMAGES="${IMAGES:-20000}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
WORK="$(mktemp -d /tmp/pass-wds-gpu.XXXXXX)"
NPROC="$(nproc)"
echo "== $(date -u +%FT%TZ) on $(hostname), $NPROC CPUs"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not available"

missing="$($PY - <<'EOF'
import importlib.util
need = {"numpy": "numpy", "PIL": "pillow", "yaml": "pyyaml", "fsspec": "fsspec", "pyarrow": "pyarrow",
        "tqdm": "tqdm", "psutil": "psutil", "braceexpand": "braceexpand"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
)"
if [ -n "$missing" ]; then
  echo "== installing missing: $missing"
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --target "$WORK/site" .whl/*.whl || exit 1
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    $PY -m pip install -q $missing || exit 1
  fi
fi
$PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "(editable install failed; using PYTHONPATH)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import torch, pass_wds; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" || exit 1

echo "== data: $IMAGES PASS-like images -> shards"
$PY scripts/make_fake_pass.py --out "$WORK/raw" --images "$IMAGES" --parts 8 --workers "$NPROC" || exit 1
$PY -m pass_wds.cli make-shards "$WORK"/raw/PASS.*.tar --metadata "$WORK/raw/pass_metadata.csv" \
    --output "$WORK/shards" --shard-size 32MB --workers "$NPROC" --no-validate --no-progress || exit 1

echo "== benchmarks/bench_gpu.py"
timeout 150 $PY benchmarks/bench_gpu.py --source "$WORK/shards/index.json" --seconds 4 --out "$OUT"
echo "== pass-wds bench --device cuda"
timeout 90 $PY -m pass_wds.cli bench "$WORK/shards/index.json" --recipe simclr --workers $((NPROC - 1)) \
    --batch-size 256 --batches 30 --device cuda --json "$OUT/cli_bench.json"
echo "== done $(date -u +%FT%TZ); results in $OUT"
rm -rf "$WORK"
