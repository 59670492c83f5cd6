#!/bin/bash
# Session 25, call 3 (one H200): the H200's gpt-oss / qwen3 8192-token tail-split picks against the same tile with a
# tail-wide or 32-token body and the three-quarter body (sweep_gemm.py --three-quarter; session 24's v30 was measured
# on an H100 only), the winners >= 1% set (set_cache_pick.py --from-sweep) into a copy of the cache, then the layer at
# 8192 tokens, new / base / new / base.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
DEV="$(python -c 'import torch; print(torch.cuda.get_device_name())')"
echo "$DEV"
for w in gptoss qwen3; do
  timeout 120 python benchmarks/sweep_gemm.py --workload "$w" --tokens 8192 --three-quarter \
      --json "$OUT/sweep-$w.json" 2>&1 | grep -E "^gemm|FAILED" | cut -c1-175
done
rm -rf /tmp/cache_new && cp -r autotune_cache /tmp/cache_new
python benchmarks/set_cache_pick.py --device "$DEV" --root /tmp/cache_new --from-sweep "$OUT"/sweep-*.json \
    --min-gain 0.01 2>&1 | cut -c1-60
mkdir -p "$OUT/cache_new" && cp -r /tmp/cache_new/NVIDIA_H200 "$OUT/cache_new/"
RUNS="new:TMOE_AUTOTUNE_CACHE=/tmp/cache_new base:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache new:TMOE_AUTOTUNE_CACHE=/tmp/cache_new base:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache" \
    WORKLOADS=qwen3,gptoss TOKENS=8192 BENCH_TIMEOUT=90 OUT=$OUT/ab bash benchmarks/run_ab.sh > /dev/null
timeout 30 python benchmarks/report.py --ab "$OUT/ab" 2>&1 | tail -4
rm -f "$OUT"/ab/*.log && tar -czf "$OUT/ab.tgz" -C "$OUT" ab cache_new && rm -rf "$OUT/ab" "$OUT/cache_new"
