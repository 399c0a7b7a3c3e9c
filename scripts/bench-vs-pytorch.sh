#!/usr/bin/env bash
# The RMT segment loop, PyTorch against rmt-fast, on the same cores in the same run (issue 5).
#
#   scripts/bench-vs-pytorch.sh [SEGMENTS] [THREADS] [ROUNDS]      # defaults: 6 segments, all cores, 2 rounds
#
# Model: GPT-2 small (12 × 768, random weights), RMT with 16 memory tokens, segments of 512 (544 positions per
# step), f32, one stream. PyTorch runs HF GPT-2 through scripts/rmt_reference.py (`eager`: the backbone only, the
# lean loop; `authors`: the full LM head every segment, as the released code); rmt-fast runs `infer` with the fast
# kernels and with the exact reference. The runs alternate ROUNDS times so that drift hits all of them alike; the
# table gives each one's best and the ratios against PyTorch eager.
#
# PyTorch is never a dependency: it is installed on demand into $VENV (default target/bench-venv, ~6 GB), or
# taken from $PYTHON if that interpreter already has torch and transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
SEGMENTS=${1:-6}
THREADS=${2:-$(nproc)}
ROUNDS=${3:-2}
VENV=${VENV:-target/bench-venv}
PYTHON=${PYTHON:-$VENV/bin/python}

if ! "$PYTHON" -c "import torch, transformers, safetensors" 2>/dev/null; then
  echo "installing PyTorch into $VENV (once)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch transformers safetensors
  PYTHON=$VENV/bin/python
fi

cargo build --release --quiet
BIN=target/release/rmt-fast
WORK=target/bench-vs-pytorch
mkdir -p "$WORK"
cat > "$WORK/gpt2-small.json" <<JSON
{"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "n_positions": 1024,
 "memory": {"kind": "rmt", "num_mem_tokens": 16, "segment_size": 512}}
JSON
[ -f "$WORK/gpt2-small.safetensors" ] || $BIN init --config "$WORK/gpt2-small.json" -o "$WORK/gpt2-small.safetensors" >/dev/null
"$PYTHON" - "$WORK/tokens.u16" $((SEGMENTS * 512)) <<'PY'
import random, struct, sys
random.seed(0)
n = int(sys.argv[2])
open(sys.argv[1], "wb").write(struct.pack(f"<{n}H", *[random.randrange(50000) for _ in range(n)]))
PY

pytorch() {  # $1: mode (eager | authors) → tokens/s
  "$PYTHON" scripts/rmt_reference.py bench --device cpu --dtype f32 --kinds rmt --batch 1 --modes "$1" \
    --segments "$SEGMENTS" --threads "$THREADS" | "$PYTHON" -c 'import json,sys; print(json.loads(sys.stdin.readline())["tokens_per_s"])'
}
rmtfast() {  # $1: device (cpu | cpu-reference) → tokens/s
  $BIN infer --model "$WORK/gpt2-small.safetensors" --device "$1" --threads "$THREADS" --json "$WORK/tokens.u16" \
    2>/dev/null | "$PYTHON" -c 'import json,sys; print(round(json.load(sys.stdin)["tokens_per_s"]))'
}

declare -A best
runs=("pytorch eager" "pytorch authors" "rmt-fast cpu" "rmt-fast cpu-reference")
for round in $(seq "$ROUNDS"); do
  for r in "${runs[@]}"; do
    set -- $r
    if [ "$1" = pytorch ]; then tps=$(pytorch "$2"); else tps=$(rmtfast "$2"); fi
    echo "round $round: $r: $tps tokens/s" >&2
    if [ -z "${best[$r]:-}" ] || [ "$tps" -gt "${best[$r]}" ]; then best[$r]=$tps; fi
  done
done

echo "GPT-2-small RMT, 16 + 512 + 16 positions, f32, $SEGMENTS segments, $THREADS threads, best of $ROUNDS" \
     "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
echo
echo "| loop | tokens/s | ms/segment | vs PyTorch eager |"
echo "|---|---|---|---|"
base=${best["pytorch eager"]}
for r in "${runs[@]}"; do
  tps=${best[$r]}
  awk -v r="$r" -v t="$tps" -v b="$base" 'BEGIN { printf "| %s | %d | %.0f | %.2f× |\n", r, t, 512000 / t, t / b }'
done
