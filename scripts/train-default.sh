#!/usr/bin/env bash
# Retrains the bundled model (models/default.safetensors) from scratch: the runs of models/recipe/ in name order,
# each starting from the best model of the run before it (their configs name target/train-default/RUN). Two threads,
# as the recipe was run: the result is then the same bytes (see models/README.md). ≈ 1.7 h on 2 cores.
#
#   scripts/train-default.sh [OUT_MODEL]      (default: target/train-default/default.safetensors, bf16)
#
# Interrupted (Ctrl-C, a crash)? Run it again: finished runs are skipped and the one in progress resumes exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=target/train-default
OUT=${1:-$RUNS/default.safetensors}
cargo build --release --quiet
B=target/release/rmt-fast
for cfg in models/recipe/*.json; do
  run=$RUNS/$(basename "$cfg" .json)
  [ -f "$run/finished" ] && continue
  resume=()
  [ -f "$run/checkpoint.safetensors" ] && resume=(--resume)
  echo "== $run ($cfg)" >&2
  $B train --config "$cfg" -o "$run" --threads 2 "${resume[@]}"
  touch "$run/finished"
done
$B convert "$run/model_best.safetensors" --dtype bf16 -o "$OUT"
