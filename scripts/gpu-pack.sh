#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine that has no Rust toolchain and no network, into
# target/gpu-pack (stripped, a few tens of MB): the rmt-fast binary, the GPU test binary (tests/cuda_gpu.rs), the
# CUDA benchmark (benches/cuda.rs) and the kernels compiled for sm_80 and sm_90a (so NVRTC is not needed there). Same architecture (x86-64 Linux) as the build machine.
#
#   scripts/gpu-pack.sh && <copy the repository with target/gpu-pack> && scripts/gpu-check.sh   # on the GPU box
#   (or carry target/gpu-pack.tar.xz, written too: gpu-check.sh and gpu-profile.sh unpack it)
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=target/gpu-pack
rm -rf "$PACK" && mkdir -p "$PACK"
cargo build --release --quiet
executable() {  # cargo args…, target name (last) → path of that target's built executable
  cargo "${@:1:$#-1}" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "${@: -1}"
}
cp target/release/rmt-fast "$PACK/rmt-fast"
cp "$(executable test --release --test cuda_gpu cuda_gpu | tail -1)" "$PACK/cuda_gpu"
cp "$(executable bench --bench cuda cuda | tail -1)" "$PACK/cuda_bench"
strip "$PACK"/*
# the kernels compiled here for A100 and H100, so the GPU machine needs no NVRTC (gpu-check.sh points the cache here)
mkdir -p "$PACK/kernels"
scripts/install-nvrtc.sh > /dev/null  # the compiler of the kernels (a fresh machine has none)
target/release/rmt-fast kernels --arch sm_80,sm_90a -o "$PACK/kernels" > "$PACK/kernels/ptxas.md"
git describe --always --dirty > "$PACK/commit"
du -sh "$PACK"/* >&2
# the same, compressed: what a device lease carries when the working tree and the folder exceed its 64 MiB
tar -C "$(dirname "$PACK")" -cJf "$PACK.tar.xz" "$(basename "$PACK")"
du -sh "$PACK.tar.xz" >&2
