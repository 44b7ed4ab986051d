#!/usr/bin/env bash
# Installs the baselines of bench_loader.py that are not pass-wds dependencies (benchmark set-up only):
#   * NVIDIA DALI (nvidia-dali-cuda120: runs CPU pipelines without a GPU), LitData, matplotlib, simplejpeg,
#     psutil (the `bench` extra of pyproject.toml, installed by name);
#   * Meta SPDL (`spdl` from the package index) and the FFmpeg 5.1 runtime libraries its wheel links against
#     (Debian 12 packages them as libavcodec59 & co.; without them `import spdl.io` fails and bench_loader.py
#     skips the SPDL baseline with that reason).
# Never changes torch (constraints.txt pins it). Needs root for apt-get; skips that step (and says so) otherwise.
#
#     bash benchmarks/setup_baselines.sh            # everything
#     SKIP_APT=1 bash benchmarks/setup_baselines.sh # pip packages only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
FFMPEG_LIBS="libavcodec59 libavformat59 libavfilter8 libavdevice59 libavutil57 libswscale6 libswresample4"

if [ -z "${SKIP_APT:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $FFMPEG_LIBS \
            || echo "setup_baselines: FFmpeg 5.1 libraries not installed (SPDL baseline will be skipped)" >&2
    else
        echo "setup_baselines: not root or no apt-get: FFmpeg 5.1 libraries ($FFMPEG_LIBS) not installed" >&2
    fi
fi
# the `bench` extra by name (an editable install of this checkout would re-point an existing one)
$PY -m pip install -q -c constraints.txt "litdata>=0.2.50" "matplotlib>=3.8" "psutil>=5.9" "simplejpeg>=1.7" \
    "nvidia-dali-cuda120>=1.30"
$PY -m pip install -q -c constraints.txt spdl \
    || echo "setup_baselines: spdl not installed (SPDL baseline will be skipped)" >&2
$PY - <<'PYEOF'
import importlib
for name in ("nvidia.dali", "spdl.io", "litdata", "simplejpeg"):
    try:
        importlib.import_module(name)
        print(f"setup_baselines: {name}: ok")
    except Exception as e:  # report, do not fail: bench_loader.py skips a missing baseline with its reason
        print(f"setup_baselines: {name}: unavailable ({type(e).__name__}: {e})")
PYEOF
