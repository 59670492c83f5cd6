#!/bin/bash
# Session 24, call 7 (one H100): the committed cache (the 8192-token picks of call 6) against a675e0d's cache
# (ab_base/autotune_cache), same tree, layer at 8192 tokens, new / base / new / base.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
RUNS="new base:TMOE_AUTOTUNE_CACHE=$PWD/ab_base/autotune_cache new base:TMOE_AUTOTUNE_CACHE=$PWD/ab_base/autotune_cache" \
    WORKLOADS=qwen3,gptoss,dsv3 TOKENS=8192 BENCH_TIMEOUT=70 bash benchmarks/run_ab.sh > /dev/null
PYTHONPATH=. timeout 30 python benchmarks/report.py --ab "$OUT" 2>&1 | tail -5
