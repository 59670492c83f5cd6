#!/bin/bash
# Session 26, call 4 (one H200): the H200 T = 8192 picks with the TMA ring (call 3's sweeps, set_cache_pick.py
# --from-sweep --min-gain 0.02: both GEMMs of dsv3 / v4flash / gpt-oss, qwen3 GEMM2) against the previous cache
# (ab_base/autotune_cache = HEAD's), the same tree, whole layer, new / base / new / base; then the layer tests
# (test_layer, test_pdl: every path of the layer, CUDA graphs, PDL chains, with these picks).
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name --format=csv,noheader
BASE_CACHE="base:TMOE_AUTOTUNE_CACHE=$PWD/ab_base/autotune_cache"
RUNS="new $BASE_CACHE new $BASE_CACHE" WORKLOADS=dsv3,v4flash,gptoss,qwen3 TOKENS=8192 BENCH_TIMEOUT=150 \
    OUT=$OUT/ab8192 bash benchmarks/run_ab.sh > /dev/null
PYTHONPATH=. timeout 30 python benchmarks/report.py --ab "$OUT/ab8192" 2>&1 | tail -6
rm -f "$OUT"/ab8192/*.log && tar -czf "$OUT/ab.tgz" -C "$OUT" ab8192 && rm -rf "$OUT/ab8192"
PYTHONPATH=. timeout 200 python benchmarks/run_gpu_tests.py --procs 12 --timeout 180 --out /tmp/t tests/test_layer.py \
    tests/test_pdl.py 2>&1 | tail -3
grep -h -E "FAILED|Error" /tmp/t/shard-*.txt | head -10
