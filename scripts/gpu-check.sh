#!/usr/bin/env bash
# The CUDA backend on a GPU machine, in one command with no network and no Rust toolchain (ENGINEERING §6, rung 4).
# Build the binaries first on the development machine (scripts/gpu-pack.sh) and carry target/gpu-pack over.
#
#   scripts/gpu-check.sh              # everything; writes bench/results/<date>-gpu-check-<gpu>.md
#   scripts/gpu-check.sh --dry-run    # on a machine without a GPU: runs every step that does not need one
#   SEGMENTS=21485 scripts/gpu-check.sh   # the end-to-end runs at 11M tokens instead of 1M (1954 segments)
#   SEGMENTS=1954,21485 scripts/gpu-check.sh   # at both lengths
#
# Knobs for a short lease: REPORT (the report's path; every step's full output goes to $REPORT.log beside it, both
# written as the run goes, so a run cut short keeps what it did), STEP_TIMEOUT (seconds per step, default 600),
# BENCH_ARGS (Criterion's, default a 1 s warm-up and 3 s of measurement), PT_SEGMENTS (segments of the PyTorch loop,
# default the first of SEGMENTS) and PT_MODES (default eager,compile; empty: the PyTorch loop is not run).
#
# Steps: 1. the device; 2. parity on the GPU (tests/cuda_gpu.rs: every kernel, tiny and GPT-2-small streams, bf16
# and f32, against the CPU backend); 3. rmt-fast's benchmarks: benches/cuda.rs (single and batched steps, retrieval
# at 1M tokens, with their floors), end-to-end `rmt-fast infer` over SEGMENTS × 512 tokens (RMT and RMT-R) and the
# bundled ARMT's 1M-token demo (GPU and CPU); 4. compute-sanitizer memcheck on a short stream (RMT, RMT-R and the
# bundled ARMT); 5. the PyTorch loop of the same model on the same GPU (HF GPT-2, bf16, eager and torch.compile;
# scripts/rmt_reference.py). Every step's output goes into the report; a failed step is reported and the run goes
# on, and the exit status says whether all passed.
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PACK=${PACK:-target/gpu-pack}
[[ ! -d "$PACK" && -f "$PACK.tar.xz" ]] && tar -C "$(dirname "$PACK")" -xJf "$PACK.tar.xz"  # carried compressed
SEGMENTS=${SEGMENTS:-1954}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
BENCH_ARGS=${BENCH_ARGS:---warm-up-time 1 --measurement-time 3}
PT_SEGMENTS=${PT_SEGMENTS:-${SEGMENTS%%,*}}
PT_MODES=${PT_MODES-eager,compile}
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
failed=0
# the CUBINs gpu-pack.sh compiled (another architecture is compiled here, if NVRTC is on the loader path)
export RMT_KERNEL_CACHE=${RMT_KERNEL_CACHE:-$PWD/$PACK/kernels}
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -e $d/libnvrtc.so.13 ]] && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
done

for f in rmt-fast cuda_gpu cuda_bench; do
  [[ -x "$PACK/$f" ]] || { echo "missing $PACK/$f: run scripts/gpu-pack.sh on the build machine first" >&2; exit 2; }
done

if [[ $DRY == 1 ]]; then
  gpu="dry-run (no GPU)"
else
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) || { echo "nvidia-smi failed: no GPU?" >&2; exit 2; }
fi
slug=$(echo "$gpu" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
if [[ $DRY == 1 ]]; then REPORT=${REPORT:-$WORK/report.md}; else REPORT=${REPORT:-bench/results/$(date +%F)-gpu-check-$slug.md}; fi
mkdir -p "$(dirname "$REPORT")"
: > "$REPORT.log"

section() { printf '\n## %s\n\n' "$1" >> "$REPORT"; echo "== $1" >&2; }
# bench_table LOG: Criterion's results in LOG as markdown rows (id, median time, median throughput), so that they
# survive the report's 60-line excerpt of a long benchmark run
bench_table() {
  awk 'function mid(line,   a) { sub(/^[^[]*\[ */, "", line); split(line, a, " "); return a[3] " " a[4] }
       function flush() { if (row != "") print row " |"; row = "" }
       /^Benchmarking / { next }
       /^[^ ]/ { flush(); id = $0; next }
       /^ +time:/ && !/%/ { flush(); row = "| " id " | " mid($0) " |"; next }
       /^ +thrpt:/ && !/%/ && row != "" { row = row " " mid($0); flush() }
       END { flush() }' "$1"
}
# run NAME CMD…: runs it, keeps the last 60 lines of its output in the report (all of it in $last_log), records
# pass/fail
run() {
  local name=$1; shift
  local log="$WORK/$(echo "$name" | tr -cs 'a-zA-Z0-9' '_').log"
  last_log=$log
  local t0=$SECONDS
  echo "== $name: \$ $*" >> "$REPORT.log"
  timeout --kill-after=10 "$STEP_TIMEOUT" "$@" 2>&1 | tee "$log" >> "$REPORT.log"
  local rc=${PIPESTATUS[0]} why
  if [[ $rc == 0 ]]; then echo "- $name: passed ($((SECONDS - t0)) s)" >> "$REPORT"; else
    why=$rc; [[ $rc == 124 || $rc == 137 ]] && why="$rc: stopped after STEP_TIMEOUT=$STEP_TIMEOUT s"
    echo "- $name: **FAILED** (exit $why, $((SECONDS - t0)) s)" >> "$REPORT"; failed=1; fi
  { echo; echo '```'; echo "\$ $*"; tail -60 "$log"; echo '```'; } >> "$REPORT"
  return $rc
}

{
  echo "# GPU check: $gpu, $(date +%F)"
  echo
  echo "Produced by \`scripts/gpu-check.sh\` from the binaries of \`scripts/gpu-pack.sh\` (commit $(cat "$PACK/commit" 2>/dev/null || echo unknown))."
} > "$REPORT"

section "1. Device"
if [[ $DRY == 1 ]]; then echo "dry run: no GPU queried" >> "$REPORT"; else
  run "nvidia-smi" nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; fi
run "CPU" bash -c "grep -m1 'model name' /proc/cpuinfo; nproc"

section "2. Parity with the CPU backend"
if [[ $DRY == 1 ]]; then run "GPU tests (listed only)" "$PACK/cuda_gpu" --ignored --list
else run "GPU tests" "$PACK/cuda_gpu" --ignored --test-threads=1 --nocapture; fi

# models and token files for the end-to-end runs: GPT-2 small, random weights (speed does not depend on them)
for kind in rmt rmt-r; do
  retrieval=""; [[ $kind == rmt-r ]] && retrieval=', "retrieval": "v2"'
  cat > "$WORK/$kind.json" <<JSON
{"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "n_positions": 1024,
 "memory": {"kind": "$kind", "num_mem_tokens": 16, "segment_size": 512$retrieval}}
JSON
  "$PACK/rmt-fast" init --config "$WORK/$kind.json" -o "$WORK/$kind.safetensors" > /dev/null
done
tokens() {  # $1: count → a .u16 file of random tokens
  "$PYTHON" -c "import random,struct,sys; random.seed(0); n=int(sys.argv[1]); open(sys.argv[2],'wb').write(struct.pack(f'<{n}H', *[random.randrange(50000) for _ in range(n)]))" "$1" "$WORK/tokens-$1.u16"
  echo "$WORK/tokens-$1.u16"
}
short=$(tokens 4096)

section "3. Benchmarks of rmt-fast"
echo "Kernel and step benchmarks (Criterion; tokens/s = 512 × streams / time per step), with the floors:" >> "$REPORT"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
run "benches/cuda.rs" "$PACK/cuda_bench" --bench $BENCH_ARGS
rows=$(bench_table "$last_log")
if [[ -n $rows ]]; then
  { echo; echo "| benchmark | median time | median throughput |"; echo "|---|---|---|"; echo "$rows"; } >> "$REPORT"
else
  printf '\nNo Criterion results in its output.\n' >> "$REPORT"
fi
# end to end; a dry run reads 2 segments on the CPU instead (GPT-2 small takes ~1 s a segment there)
for segments in ${SEGMENTS//,/ }; do
  if [[ $DRY == 1 ]]; then device=cpu; long=$(tokens 1024); else device=cuda; long=$(tokens $((segments * 512))); fi
  for kind in rmt rmt-r; do
    run "rmt-fast infer, $kind, $device, $(( $(stat -c %s "$long") / 2 )) tokens" \
      "$PACK/rmt-fast" infer "$long" --model "$WORK/$kind.safetensors" --device "$device" --json
  done
  rm -f "$long"
done
# the bundled model (an ARMT, 4 layers × 128) on its demo: one BABILong sample read and answered, on the GPU and on
# this machine's CPU (a dry run: 4k tokens on the CPU)
if [[ $DRY == 1 ]]; then demo=(4k cpu); else demo=(1M cuda cpu); fi
for device in "${demo[@]:1}"; do
  run "rmt-fast demo (the bundled ARMT), $device, ${demo[0]} tokens" "$PACK/rmt-fast" demo --length "${demo[0]}" --device "$device"
done

section "4. compute-sanitizer (memcheck) on a short stream"
if [[ $DRY == 1 ]]; then
  run "rmt-fast --device auto (falls back to the CPU here)" "$PACK/rmt-fast" infer "$short" --model "$WORK/rmt.safetensors" --device auto
elif command -v compute-sanitizer > /dev/null; then
  for model in "$WORK/rmt.safetensors" "$WORK/rmt-r.safetensors" models/default.safetensors; do
    run "memcheck $(basename "$model" .safetensors)" compute-sanitizer --tool memcheck --error-exitcode 1 \
      "$PACK/rmt-fast" infer "$short" --model "$model" --device cuda
  done
else
  echo "compute-sanitizer is not installed on this machine: not run" >> "$REPORT"
fi

section "5. The PyTorch loop on the same GPU"
if [[ $DRY == 1 ]]; then
  run "PyTorch reference script compiles" "$PYTHON" -m py_compile scripts/rmt_reference.py
elif "$PYTHON" -c "import torch, transformers" 2>/dev/null; then
  for mode in ${PT_MODES//,/ }; do
    run "PyTorch RMT loop (HF GPT-2, bf16, same GPU, $mode)" "$PYTHON" scripts/rmt_reference.py bench --device cuda \
      --dtype bf16 --kinds rmt,rmt-r --batch 1,16 --modes "$mode" --segments "$PT_SEGMENTS" --json "${REPORT%.md}-pytorch-$mode.json"
  done
else
  echo "PyTorch with transformers is not installed: the PyTorch baseline was not run" >> "$REPORT"; failed=1
fi

section "Summary"
if [[ $failed == 0 ]]; then echo "All steps passed." >> "$REPORT"; else echo "Some steps FAILED: see above." >> "$REPORT"; fi
echo "report: $REPORT" >&2
exit $failed
