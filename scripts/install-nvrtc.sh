#!/usr/bin/env bash
# Installs NVRTC (CUDA's run-time compiler, no GPU needed) from NVIDIA's pinned PyPI wheel into the user cache,
# where rmt-fast finds it without LD_LIBRARY_PATH. 13.0.88 matches the GPU machines' CUDA 13.0 driver (a newer
# NVRTC emits PTX that driver rejects; ENGINEERING §4). Used by the kernel compile checks (tests/cuda_compile.rs)
# and by the CUDA backend on a machine without a CUDA toolkit. Idempotent.
set -euo pipefail
dir="${RMT_NVRTC_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rmt-fast/nvrtc-13.0.88}"
lib="$dir/nvidia/cu13/lib/libnvrtc.so.13"
if [[ ! -f "$lib" ]]; then
    echo "installing NVRTC 13.0.88 into $dir" >&2
    python3 -m pip install -q --no-cache-dir --disable-pip-version-check --target "$dir" nvidia-cuda-nvrtc==13.0.88
fi
echo "$lib"
