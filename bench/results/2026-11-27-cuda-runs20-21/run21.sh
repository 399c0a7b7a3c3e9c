#!/usr/bin/env bash
# run 21: matmul tile rule before (f58a22c) / after (3698b14) on the same machine
set -u
OUT=${OUT:-/tmp/out}
rm -rf target/before target/gpu-pack
mkdir -p target/before && tar -C target/before -xJf target/gpu-pack-before.tar.xz
tar -C target -xJf target/gpu-pack.tar.xz
python3 -c "import random,struct; random.seed(0); n=1954*512; open('/tmp/t.u16','wb').write(struct.pack(f'<{n}H', *[random.randrange(50000) for _ in range(n)]))"
P=target/gpu-pack
for kind in rmt rmt-r; do
  extra=""; [[ $kind == rmt-r ]] && extra=', "retrieval": "v2"'
  echo "{\"n_layer\": 12, \"n_head\": 12, \"n_embd\": 768, \"vocab_size\": 50257, \"n_positions\": 1024, \"memory\": {\"kind\": \"$kind\", \"num_mem_tokens\": 16, \"segment_size\": 512$extra}}" > /tmp/$kind.json
  $P/rmt-fast init --config /tmp/$kind.json -o /tmp/$kind.safetensors > /dev/null
done
(RMT_KERNEL_CACHE=$PWD/$P/kernels timeout 120 $P/cuda_gpu --test-threads 1 2>&1 | tail -3) > $OUT/gpu-tests.txt
for round in 1 2; do
  for v in before after; do
    if [[ $v == before ]]; then P=target/before/gpu-pack; else P=target/gpu-pack; fi
    export RMT_KERNEL_CACHE=$PWD/$P/kernels
    echo "== round $round: $v ($(cat $P/commit))"
    timeout 60 $P/cuda_bench --bench "rmt/1 stream|armt chain" --warm-up-time 1 --measurement-time 3 2>&1 | grep -E "^cuda|time:"
    for kind in rmt rmt-r; do
      echo "infer 1M $kind: $(timeout 60 $P/rmt-fast infer /tmp/t.u16 --model /tmp/$kind.safetensors --device cuda --json | grep -o '"tokens_per_s":[0-9.]*')"
    done
  done
done > $OUT/tiles-ab.txt 2>&1
cat $OUT/gpu-tests.txt $OUT/tiles-ab.txt
