#!/usr/bin/env bash
# run 20: ARMT before (4b7d406) / after (f58a22c) on the same machine, then the check and the profiles
set -u
OUT=${OUT:-/tmp/out}
mkdir -p target/before && tar -C target/before -xJf target/gpu-pack-before.tar.xz
tar -C target -xJf target/gpu-pack.tar.xz
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
BA="--warm-up-time 1 --measurement-time 3"
for round in 1 2; do
  for v in before after; do
    if [[ $v == before ]]; then P=target/before/gpu-pack; else P=target/gpu-pack; fi
    echo "== round $round: $v ($(cat $P/commit))"
    RMT_KERNEL_CACHE=$PWD/$P/kernels timeout 60 $P/cuda_bench --bench "armt chain" $BA 2>&1 | grep -E "^cuda|time:" 
  done
done > $OUT/armt-ab.txt 2>&1
PACK=target/before/gpu-pack KINDS=armt SEGMENTS=2 timeout 60 scripts/gpu-profile.sh $OUT/before > /dev/null 2>&1
KINDS="armt" SEGMENTS=2 timeout 60 scripts/gpu-profile.sh $OUT/after > /dev/null 2>&1
REPORT=$OUT/gpu-check.md STEP_TIMEOUT=150 PT_SEGMENTS=256 PT_MODES=eager BENCH_ARGS="--warm-up-time 1 --measurement-time 2" timeout 300 scripts/gpu-check.sh > $OUT/gpu-check.log 2>&1
echo "check rc $?"
KINDS="rmt-r armt" RETRIEVAL_AT=1954 DETAIL=1 SEGMENTS=2 timeout 120 scripts/gpu-profile.sh $OUT/profile > /dev/null 2>&1
echo "profile rc $?"
cat $OUT/armt-ab.txt
grep -E "PASS|FAIL|tok|ms" $OUT/gpu-check.md | head -40
