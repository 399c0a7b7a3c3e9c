#!/usr/bin/env bash
# Stream scaling of `rmt-fast infer`: wall time must grow linearly with the stream and peak memory stay flat.
# Tokenizes the public-domain books in ../shared/data/haystack (≈2.2M GPT-2 tokens: Austen + KJV), then reads
# streams of 1M and 11M tokens (the books repeated, passed as several token files) with small random RMT and
# RMT-R models, and prints wall time, tokens/s and peak RSS per run. Not a test: run it by hand.
#
#   scripts/bench-stream.sh [OUT.md]        (RMT-R lengths: RMTR_TOKENS="1000000 3000000" by default)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-}
work=${WORK:-/tmp/rmt-fast-bench-stream}
rmtr_tokens=${RMTR_TOKENS:-"1000000 3000000"}
mkdir -p "$work"
cargo build --release -q
bin=target/release/rmt-fast
haystack=../shared/data/haystack

# one token file per book
books=()
for f in "$haystack"/austen/*.txt "$haystack"/kjv.txt; do
  b="$work/$(basename "${f%.txt}").bin"
  [ -f "$b" ] || "$bin" tokenize "$f" -o "$b" 2>/dev/null
  books+=("$b")
done
book_tokens() { python3 -c "import struct,sys; print(struct.unpack('<3i', open(sys.argv[1],'rb').read(12))[2])" "$1"; }

# a stream of N tokens: whole books in turn, the last one cut to fit (written as its own token file)
make_stream() {
  local n=$1 name=$2 files=() left=$1 i=0
  while [ "$left" -gt 0 ]; do
    local b=${books[$((i % ${#books[@]}))]} t
    t=$(book_tokens "$b")
    if [ "$t" -le "$left" ]; then files+=("$b"); left=$((left - t))
    else
      python3 - "$b" "$left" "$work/$name.cut.bin" <<'PY'
import struct, sys
src, n, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(src, 'rb').read()
header = list(struct.unpack('<256i', data[:1024])); header[2] = n
open(dst, 'wb').write(struct.pack('<256i', *header) + data[1024:1024 + 2 * n])
PY
      files+=("$work/$name.cut.bin"); left=0
    fi
    i=$((i + 1))
  done
  printf '%s\n' "${files[@]}" > "$work/$name.list"
}

# small random models: 2 layers × 64 wide, 16 memory tokens, segments of 512
for kind in rmt rmt-r; do
  extra=""; [ "$kind" = rmt-r ] && extra=', "retrieval": "v2"'
  cat > "$work/$kind.json" <<JSON
{"n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 50257, "n_positions": 1024,
 "memory": {"kind": "$kind", "num_mem_tokens": 16, "segment_size": 512$extra}}
JSON
  "$bin" init --config "$work/$kind.json" --seed 1 -o "$work/$kind.safetensors" >/dev/null
done

run() { # kind tokens
  local kind=$1 n=$2
  make_stream "$n" "s$n"
  mapfile -t files < "$work/s$n.list"
  "$bin" infer "${files[@]}" --model "$work/$kind.safetensors" --json --threads 2 --ask "Where is Emma?" \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['tokens_read'], r['wall_s'], r['tokens_per_s'], r['peak_rss_bytes'])"
}

rows=()
declare -A wall rss
for spec in "rmt 1000000" "rmt 11000000" $(for n in $rmtr_tokens; do echo "rmt-r:$n"; done); do
  spec=${spec/:/ }; set -- $spec; kind=$1; n=$2
  read -r tokens secs tps peak < <(run "$kind" "$n")
  wall[$kind:$n]=$secs; rss[$kind:$n]=$peak
  rows+=("| $kind | $tokens | $(printf %.1f "$secs") | $(printf %.0f "$tps") | $(python3 -c "print(f'{$peak/2**20:.1f}')") |")
  echo "${rows[-1]}" >&2
done

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
report=$(cat <<MD
Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(date -u +%Y-%m-%d).
Model: random, 2 layers × 64 wide, 16 memory tokens, segments of 512 (RMT-R: retrieval v2, f32 store in RAM).
Stream: Austen + KJV tokenized with GPT-2's BPE, repeated to length.

| kind | tokens | wall s | tokens/s | peak RSS MiB |
|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")

- RMT 11M / 1M wall time: $(ratio "${wall[rmt:11000000]}" "${wall[rmt:1000000]}") (linear: 11 ± 10%)
- RMT 11M / 1M peak RSS: $(ratio "${rss[rmt:11000000]}" "${rss[rmt:1000000]}") (flat: 1 ± 10%)
$(set -- $rmtr_tokens; [ $# -ge 2 ] && echo "- RMT-R $2 / $1 tokens: wall $(ratio "${wall[rmt-r:$2]}" "${wall[rmt-r:$1]}"), peak RSS $(ratio "${rss[rmt-r:$2]}" "${rss[rmt-r:$1]}")")
MD
)
echo "$report"
[ -n "$out" ] && { printf '# Stream scaling of `rmt-fast infer`\n\nCommand: `scripts/bench-stream.sh %s`\n\n%s\n' "$out" "$report" > "$out"; echo "wrote $out" >&2; }
