#!/usr/bin/env bash
# Two or more rmt-fast builds' `demo` times, alternated in one sitting (this machine drifts by 10–30 % between
# runs, so a speed-up is only read from builds run in turn).
#
#   scripts/ab-demo.sh ROUNDS LENGTH BIN...        # e.g. scripts/ab-demo.sh 3 1M /tmp/rmt-fast-old target/release/rmt-fast
#
# Each round runs every BIN's `demo --length LENGTH --device cpu $DEMO_ARGS` in turn (DEMO_ARGS, e.g.
# "--model models/rmt-qa1.safetensors"), and the end prints each build's seconds (the time `demo` prints: making
# the sample and reading it), sorted.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,9p "$0" >&2; exit 2; }
rounds=$1 len=$2
shift 2
declare -A times
for _ in $(seq "$rounds"); do
  for bin in "$@"; do
    line=$("$bin" demo --length "$len" --device cpu ${DEMO_ARGS:-} 2>&1 | grep "^read ") ||
      { echo "$bin: demo printed no 'read' line" >&2; exit 1; }
    times[$bin]="${times[$bin]:-} $(sed 's/.* in \([0-9.]*\) s.*/\1/' <<<"$line")"
  done
done
for bin in "$@"; do echo "$bin: $(tr ' ' '\n' <<<"${times[$bin]}" | sort -n | xargs)"; done
