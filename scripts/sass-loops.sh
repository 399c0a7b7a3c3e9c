#!/usr/bin/env bash
# Counts the SASS instructions of the tensor-core kernels' main loops, offline: what one K step (matmul) or one tile
# of 64 keys (attention) costs a warp in issue slots, the measure that Nsight Compute showed limiting these kernels
# (bench/results/2026-11-27-cuda-runs13-15.md). No GPU needed: `rmt-fast kernels` compiles the CUBINs with NVRTC and
# cuobjdump (NVIDIA's PyPI wheel, installed into the user cache) disassembles them. A loop is a backward branch
# around HMMA instructions; "work" counts the HMMA, LDSM and LDGSTS among them, the rest is overhead.
#
#   scripts/sass-loops.sh [ARCH] [KERNEL ...]     (default: sm_90a, the tensor-core kernels)
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-sm_90a}"
shift || true
kernels=("$@")
[[ ${#kernels[@]} -gt 0 ]] || kernels=(matmul matmul_128x128 matmul_f32 matmul_f32_128x128 attention)
dir="${XDG_CACHE_HOME:-$HOME/.cache}/rmt-fast/cuobjdump-13.5.37"
if [[ ! -x "$dir/nvidia/cu13/bin/cuobjdump" ]]; then
    echo "installing cuobjdump 13.5.37 into $dir" >&2
    python3 -m pip install -q --no-cache-dir --disable-pip-version-check --target "$dir" \
        nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37
fi
export PATH="$dir/nvidia/cu13/bin:$PATH"
bin="${RMT_FAST:-target/release/rmt-fast}"
[[ -x "$bin" ]] || cargo build --release --quiet
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
scripts/install-nvrtc.sh >/dev/null
if ! log=$("$bin" kernels --arch "$arch" -o "$out" 2>&1); then
    echo "$log" >&2
    echo "sass-loops: compiling the kernels for $arch failed (see above)" >&2
    exit 1
fi
python3 scripts/sass_loops.py "$out"/*-bf16.cubin "${kernels[@]}"
