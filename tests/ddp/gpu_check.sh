#!/usr/bin/env bash
# GPU smoke check of the loader + train_ssl.py (NCCL, device colour stage on CUDA, exact resume).
# Run from the repo root on a machine with a GPU: bash tests/ddp/gpu_check.sh OUTDIR
set -euo pipefail
OUT=${1:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:$PWD/tests${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH} OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python - "$OUT" <<'PY'
import sys
from pathlib import Path
from shardkit import jpeg_bytes, write_shards
write_shards(Path(sys.argv[1]) / "data", [64, 64, 64, 64], image=lambda s, i: jpeg_bytes(s * 100 + i, size=(320, 240)))
PY
run() {  # name max_steps ckpt resume-flag
  python -m torch.distributed.run --nproc_per_node 1 --master_addr 127.0.0.1 --master_port "$5" scripts/train_ssl.py \
    --config configs/train_ssl.yaml --source "$OUT/data/index.json" --recipe simclr --batch-size "${BS:-32}" \
    --num-workers 4 --epochs 2 --max-steps "$2" --checkpoint "$OUT/$3" "$4" --keys-log "$OUT/$1" --log-every 2 \
    --save-every 1000 --input-size 96
}
time run straight "${STEPS:-12}" a.pt --no-resume 29511
run part "$(( ${STEPS:-12} / 2 ))" b.pt --no-resume 29512
run rest "${STEPS:-12}" b.pt --resume 29513
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
load = lambda n: [json.loads(l) for l in (out / f"{n}.rank0").read_text().splitlines()]
s, p, r = load("straight"), load("part"), load("rest")
assert [x["keys"] for x in p + r] == [x["keys"] for x in s], "resumed keys differ"
print("keys identical after resume:", len(s), "steps")
print("loss straight:", [round(x["loss"], 4) for x in s])
print("loss resumed :", [round(x["loss"], 4) for x in p + r])
PY
