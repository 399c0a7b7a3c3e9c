#!/usr/bin/env bash
# Peak memory of `rmt-fast babilong gen` for one sample of 1M and of 10M tokens (synthetic background and the
# Austen novels): generation streams, so peak RSS must not grow with the length. Not a test: run it by hand.
#
#   scripts/babilong-rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "| length | background | wall s | peak RSS MiB |"
echo "|---|---|---|---|"
for len in 1M 10M; do
  for bg in synthetic austen; do
    h=(); [ "$bg" = austen ] && h=(--haystack ../shared/data/haystack/austen)
    /usr/bin/time -f '%e %M' -o "$work/t" target/release/rmt-fast babilong gen --tasks qa1 --lengths "$len" \
      --samples 1 "${h[@]}" -o "$work/out" 2>/dev/null
    read -r secs kb < "$work/t"
    echo "| $len | $bg | $secs | $(python3 -c "print(f'{$kb/1024:.1f}')") |"
  done
done
