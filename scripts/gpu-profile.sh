#!/usr/bin/env bash
# Per-kernel GPU time of rmt-fast's segment step, from Nsight Compute (ncu), on a GPU machine with the binaries of
# scripts/gpu-pack.sh: GPT-2 small (random weights), RMT, RMT-R v2 and ARMT (d_mem 32), reading SEGMENTS segments (default 4) with
# --device cuda. ncu times every kernel launch (graph nodes one by one), so the table is the GPU's share of a step;
# the rest of a step's wall time is the host and launch gaps. Clocks and caches are left as a replay finds them
# (`--clock-control none --cache-control none`): ncu's defaults (base clock, caches flushed before every kernel)
# inflate short kernels several-fold (session-4 profiles, bench/results/2026-11-26-h200-cuda/run3-ncu-rmt.txt).
#
#   scripts/gpu-profile.sh [OUT_DIR]      # writes OUT_DIR/ncu-<kind>.txt (default target/gpu-profile)
#   DETAIL=1 scripts/gpu-profile.sh [OUT_DIR]   # also OUT_DIR/ncu-detail.txt: why the RMT step's kernels take
#       their time (speed of light, occupancy, warp stalls, memory and scheduler sections) for one launch of each of
#       one layer's kernels (qkv, attention, merge, attn proj, residual_layernorm, fc, fc proj), and
#       OUT_DIR/ncu-detail-armt.txt: the same, with the stalls by instruction, for one layer's associative kernels
#   KINDS="armt" scripts/gpu-profile.sh [OUT_DIR]   # profile only these of rmt, rmt-r and armt
#   RETRIEVAL_AT=1954 scripts/gpu-profile.sh [OUT_DIR]   # also OUT_DIR/ncu-rmt-r-at-<N>.txt: every kernel of RMT-R's
#       last segment of a stream of N segments (1,954: 1M tokens), when the retrieval reads N − 1 stored states.
#       The segment's launches are found by counting: ncu times streams of 3 and 4 segments, and their difference
#       in launches is one segment's (the retrieval's launches do not change with the store, only their grids).
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=${PACK:-target/gpu-pack}
[[ ! -d "$PACK" && -f "$PACK.tar.xz" ]] && tar -C "$(dirname "$PACK")" -xJf "$PACK.tar.xz"  # carried compressed
OUT_DIR=${1:-target/gpu-profile}
SEGMENTS=${SEGMENTS:-4}
export RMT_KERNEL_CACHE=${RMT_KERNEL_CACHE:-$PWD/$PACK/kernels}
[[ -x "$PACK/rmt-fast" ]] || { echo "missing $PACK/rmt-fast: run scripts/gpu-pack.sh on the build machine first" >&2; exit 2; }
if [[ -n ${RETRIEVAL_AT:-} ]] && ! [[ $RETRIEVAL_AT =~ ^[0-9]+$ && $RETRIEVAL_AT -gt 4 ]]; then
  echo "RETRIEVAL_AT must be a number of segments above 4 (1954: 1M tokens), not '$RETRIEVAL_AT'" >&2; exit 2
fi
command -v ncu > /dev/null || { echo "ncu (Nsight Compute) is not on the PATH" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-profile.XXXXXX")
mkdir -p "$OUT_DIR"
tokens() {  # $1 segments of random token ids into the file $2
  python3 -c "import random,struct,sys; random.seed(0); n=int(sys.argv[1]); open(sys.argv[2],'wb').write(struct.pack(f'<{n}H', *[random.randrange(50000) for _ in range(n)]))" \
    $(($1 * 512)) "$2"
}
tokens "$SEGMENTS" "$WORK/tokens.u16"
for kind in ${KINDS:-rmt rmt-r armt}; do
  extra=""
  [[ $kind == rmt-r ]] && extra=', "retrieval": "v2"'
  [[ $kind == armt ]] && extra=', "d_mem": 32'
  echo "{\"n_layer\": 12, \"n_head\": 12, \"n_embd\": 768, \"vocab_size\": 50257, \"n_positions\": 1024,
    \"memory\": {\"kind\": \"$kind\", \"num_mem_tokens\": 16, \"segment_size\": 512$extra}}" > "$WORK/$kind.json"
  "$PACK/rmt-fast" init --config "$WORK/$kind.json" -o "$WORK/$kind.safetensors" > /dev/null
  ncu --metrics gpu__time_duration.sum --print-summary per-kernel --clock-control none --cache-control none \
    "$PACK/rmt-fast" infer "$WORK/tokens.u16" --model "$WORK/$kind.safetensors" --device cuda > "$OUT_DIR/ncu-$kind.txt" 2>&1
  echo "== $kind: $OUT_DIR/ncu-$kind.txt" >&2
  grep -E "^  [a-z_]+|gpu__time_duration|invocations" "$OUT_DIR/ncu-$kind.txt" | head -60 >&2 || true
done
launches() {  # kernel launches of an RMT-R stream of $1 segments, from ncu's per-kernel summary
  tokens "$1" "$WORK/count.u16"
  ncu --metrics gpu__time_duration.sum --print-summary per-kernel --clock-control none --cache-control none \
    "$PACK/rmt-fast" infer "$WORK/count.u16" --model "$WORK/rmt-r.safetensors" --device cuda 2>&1 |
    awk '/Invocations/ { n += $NF } END { print n }'
}
if [[ -n ${RETRIEVAL_AT:-} ]]; then
  three=$(launches 3); four=$(launches 4); per=$((four - three))
  skip=$((three + (RETRIEVAL_AT - 4) * per))
  echo "== RMT-R at $RETRIEVAL_AT segments: $per launches a segment, skipping $skip" >&2
  tokens "$RETRIEVAL_AT" "$WORK/long.u16"
  ncu --metrics gpu__time_duration.sum --print-summary per-kernel --launch-skip "$skip" --launch-count "$per" \
    --clock-control none --cache-control none \
    "$PACK/rmt-fast" infer "$WORK/long.u16" --model "$WORK/rmt-r.safetensors" --device cuda \
    > "$OUT_DIR/ncu-rmt-r-at-$RETRIEVAL_AT.txt" 2>&1
  echo "== RMT-R, last segment of $RETRIEVAL_AT: $OUT_DIR/ncu-rmt-r-at-$RETRIEVAL_AT.txt" >&2
  grep -E "^  [a-z_0-9]+|gpu__time_duration" "$OUT_DIR/ncu-rmt-r-at-$RETRIEVAL_AT.txt" | head -60 >&2 || true
fi
if [[ ${DETAIL:-0} == 1 ]]; then
  # the second layer's 8 launches (skipping embed, ln_1 and the first layer's 8), one replay set per kernel
  sections=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
            --section MemoryWorkloadAnalysis --section SchedulerStats --section ComputeWorkloadAnalysis)
  if [[ -f $WORK/rmt.safetensors ]]; then
    ncu "${sections[@]}" --launch-skip 10 --launch-count 8 --clock-control none --cache-control none \
      "$PACK/rmt-fast" infer "$WORK/tokens.u16" --model "$WORK/rmt.safetensors" --device cuda > "$OUT_DIR/ncu-detail.txt" 2>&1
    echo "== detail: $OUT_DIR/ncu-detail.txt" >&2
  fi
  if [[ -f $WORK/armt.safetensors ]]; then
    # the second layer's associative launches (the first layer's are skipped: its read finds a cold state)
    n=$(grep -c '^KERNEL void associative_' cuda/associative.cu 2>/dev/null || echo 5)
    ncu "${sections[@]}" --section SourceCounters --kernel-name regex:associative_ --launch-skip "$n" --launch-count "$n" \
      --clock-control none --cache-control none \
      "$PACK/rmt-fast" infer "$WORK/tokens.u16" --model "$WORK/armt.safetensors" --device cuda > "$OUT_DIR/ncu-detail-armt.txt" 2>&1
    echo "== detail: $OUT_DIR/ncu-detail-armt.txt" >&2
  fi
fi
rm -rf "$WORK"
