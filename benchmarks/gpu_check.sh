#!/usr/bin/env bash
# GPU benchmarks on a bare machine with this repository checked out and torch + torchvision preinstalled.
# Planned to fit 15 minutes of device time (about 8 minutes of commands); writes everything to $OUT
# (default ./gpu-out):
#   pytest_cuda.txt   the `cuda`-marked tests (decode="device" on the GPU: same crops as the worker path,
#                     fallback inside a batch, EXIF orientations, gray/CMYK) — tests/test_device_decode.py
#   gpu.json          device-stage colour throughput at batch 256 per recipe; end-to-end images/s into a tiny
#                     SimCLR step; issue 12: raw batched nvJPEG decode rate of the shards' JPEGs (the floor),
#                     simclr with CPU vs device decode at 2/4/8/15 workers (worker CPU ms/image, peak GPU
#                     memory), loader + ResNet-50 step (channels-last, bf16) for both (benchmarks/bench_gpu.py)
#   cli_bench.json    `pass-wds bench … --recipe simclr --device cuda` (throughput + per-stage time)
#   cli_bench_device.json   the same with --decode device
#   gpu_check.log     the whole output;  nvidia-smi.txt
# Needs, besides torch/torchvision: numpy pillow pyyaml fsspec pyarrow tqdm psutil braceexpand (pytest for the
# cuda tests, which are skipped without it). Missing ones are installed from ./.whl/*.whl when present (offline
# machines), else from the package index.
# Usage: OUT=/tmp/gpu-out bash benchmarks/gpu_check.sh      (then copy $OUT/gpu.json to benchmarks/results/)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu-out}"
PY="${PY:-python3}"
IMAGES="${IMAGES:-20000}"
DECODE_WORKERS="${DECODE_WORKERS:-2 4 8 15}"
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

echo "== cuda tests (decode=device on the GPU; bundled tests/data images)"
if $PY -c "import pytest" 2>/dev/null; then
  timeout 120 $PY -m pytest -q -m cuda tests/test_device_decode.py -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cuda.txt"
else
  echo "pytest is not installed: cuda tests not run" | tee "$OUT/pytest_cuda.txt"
fi
echo "== benchmarks/bench_gpu.py"
timeout 330 $PY benchmarks/bench_gpu.py --source "$WORK/shards/index.json" --seconds 4 --out "$OUT" \
    --decode-workers $DECODE_WORKERS
echo "== pass-wds bench --device cuda (accurate, then device decode)"
timeout 60 $PY -m pass_wds.cli bench "$WORK/shards/index.json" --recipe simclr --workers $((NPROC - 1)) \
    --batch-size 256 --batches 30 --device cuda --json "$OUT/cli_bench.json"
timeout 60 $PY -m pass_wds.cli bench "$WORK/shards/index.json" --recipe simclr --workers 4 \
    --batch-size 256 --batches 30 --device cuda --decode device --json "$OUT/cli_bench_device.json"
echo "== done $(date -u +%FT%TZ); results in $OUT"
rm -rf "$WORK"
