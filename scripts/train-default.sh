#!/usr/bin/env bash
# Retrains the bundled model (models/default.safetensors, an ARMT) from scratch: the runs of models/recipe/ in
# numeric order (1-binding … 9-armt-2048-4096), each starting from the best model of the run before it (their configs
# name target/train-default/RUN). Runs 1–4 make the RMT (models/rmt-qa1.safetensors), runs 5–9 the ARMT on its
# backbone. Each run keeps its best model also in bf16 (model_best.bf16.safetensors): runs 5, 8 and 9 start from those,
# as the recorded chain did. ≈ 6.2 hours on 2 cores (see models/README.md).
#
#   scripts/train-default.sh [OUT_MODEL] [LAST_RUN]
#
# OUT_MODEL (default target/train-default/default.safetensors) is LAST_RUN's best model in bf16; LAST_RUN
# (default: the last config) stops the chain early: 4-memory-16-32 retrains only the RMT (≈ 1.7 h).
# Every run uses 2 threads, as the recipe was run, so that each run is the recorded procedure on the same
# arithmetic. Interrupted (Ctrl-C, a crash)? Run it again: finished runs are skipped and the
# one in progress resumes exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=target/train-default
OUT=${1:-$RUNS/default.safetensors}
LAST=${2:-}
configs=$(printf '%s\n' models/recipe/*.json | sort -V)
if [ -n "$LAST" ] && ! grep -qx "models/recipe/$LAST.json" <<<"$configs"; then
  echo "error: no run '$LAST' in models/recipe (runs: $(basename -a -s .json $configs | tr '\n' ' '))" >&2
  exit 2
fi
cargo build --release --quiet
B=target/release/rmt-fast
for cfg in $configs; do
  name=$(basename "$cfg" .json)
  run=$RUNS/$name
  if [ ! -f "$run/finished" ]; then
    resume=()
    [ -f "$run/checkpoint.safetensors" ] && resume=(--resume)
    echo "== $run ($cfg)" >&2
    $B train --config "$cfg" -o "$run" --threads 2 "${resume[@]}"
    touch "$run/finished"
  fi
  [ -f "$run/model_best.bf16.safetensors" ] ||
    $B convert "$run/model_best.safetensors" --dtype bf16 -o "$run/model_best.bf16.safetensors"
  [ "$name" = "$LAST" ] && break
done
cp "$run/model_best.bf16.safetensors" "$OUT"
echo "wrote $OUT (the best model of $name, bf16)" >&2
