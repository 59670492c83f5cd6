#!/bin/bash
# Session 24, call 6 (one H100): prefill tail-split picks vs the same 256-token tile with a 32- / 64-token body and no
# tail launch (NOTES "v30"): GEMMs alone (sweep_gemm.py --sub-narrow, bitwise vs the pick), then a cache with every
# winner >= 1% (set_cache_pick.py --from-sweep) against the shipped cache in the layer at 8192 tokens.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
DEV="$(python -c 'import torch; print(torch.cuda.get_device_name())')"
for spec in qwen3:100 gptoss:100 dsv3:140; do
  w=${spec%%:*}
  timeout "${spec#*:}" python benchmarks/sweep_gemm.py --workload "$w" --tokens 8192 --sub-narrow \
      --json "$OUT/sweep-$w.json" 2>&1 | grep -E "^gemm|FAILED" | cut -c1-175
done
rm -rf /tmp/cache_new && cp -r autotune_cache /tmp/cache_new
python benchmarks/set_cache_pick.py --device "$DEV" --root /tmp/cache_new --from-sweep "$OUT"/sweep-*.json \
    --min-gain 0.01 2>&1 | tail -8
mkdir -p "$OUT/cache_new" && cp -r /tmp/cache_new/* "$OUT/cache_new/"
RUNS="new:TMOE_AUTOTUNE_CACHE=/tmp/cache_new base:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache new:TMOE_AUTOTUNE_CACHE=/tmp/cache_new" \
    WORKLOADS=qwen3,gptoss,dsv3 TOKENS=8192 BENCH_TIMEOUT=60 bash benchmarks/run_ab.sh > /dev/null
timeout 30 python benchmarks/report.py --ab "$OUT" 2>&1 | tail -5
