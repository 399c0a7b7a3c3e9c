#!/usr/bin/env bash
# The bundled model's BABILong table (issue 7): qa1 on bAbI **test** facts hidden in the KJV (a book the model
# never saw: it trained on Austen) and in the built-in synthetic prose, at 0k … 1M tokens.
#
#   scripts/eval-babilong.sh [MODEL] [OUT] [SAMPLES] [LONG_SAMPLES] [MILLION_SAMPLES]
#
# SAMPLES per cell at 0k, 4k, 16k, 64k (default 100), LONG_SAMPLES at 128k (default 100), MILLION_SAMPLES at 1M
# (default 100). Fewer make a quicker table: say so wherever its numbers go. Writes OUT/{kjv,synthetic}/…, the
# merged OUT/kjv.{md,csv,json} and OUT/synthetic.*, the KJV heatmap (PNG), accuracy against length for both (SVG)
# and accuracy by the needle's depth for each (OUT/depth-*.{md,svg}).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/default.safetensors}
OUT=${2:-target/eval-babilong}
N=${3:-100}
N_LONG=${4:-100}
N_1M=${5:-100}
DATA=${DATA:-../shared/data}
cargo build --release --quiet
B=target/release/rmt-fast
mkdir -p "$OUT"
for hay in kjv synthetic; do
  src=(--babi "$DATA/babi/tasks_1-20_v1-2/en-10k" --split test)
  if [ $hay = kjv ]; then src+=(--haystack "$DATA/haystack/kjv.txt"); fi   # else the built-in synthetic prose
  $B babilong gen --tasks qa1 --lengths 0k,4k,16k,64k --samples "$N" --seed 7 "${src[@]}" -o "$OUT/$hay/short"
  $B babilong gen --tasks qa1 --lengths 128k --samples "$N_LONG" --seed 8 "${src[@]}" -o "$OUT/$hay/128k"
  $B babilong gen --tasks qa1 --lengths 1M --samples "$N_1M" --seed 9 "${src[@]}" -o "$OUT/$hay/1M"
  for part in short 128k 1M; do
    $B babilong eval --model "$MODEL" --data "$OUT/$hay/$part" --batch "$(nproc)" -o "$OUT/$hay/$part-results" >/dev/null
  done
  $B babilong merge "$OUT/$hay"/{short,128k,1M}-results.json -o "$OUT/$hay"   # → OUT/kjv.{md,csv,json} …
done
$B babilong plot "$OUT/kjv.json" -o "$OUT/heatmap-kjv.png" --title "qa1, bAbI test facts in the KJV"
$B babilong plot "$OUT/kjv.json" "$OUT/synthetic.json" -o "$OUT/accuracy-vs-length.svg" \
  --title "qa1 accuracy vs context length (KJV and synthetic background)"
for hay in kjv synthetic; do   # by the needle's depth: OUT/depth-{kjv,synthetic}.{md,svg}
  $B babilong depth "$OUT/$hay.json" --data "$OUT/$hay"/{short,128k,1M} -o "$OUT/depth-$hay" \
    --title "qa1 by needle depth ($hay background)" >/dev/null
done
cat "$OUT/kjv.md" "$OUT/synthetic.md"
