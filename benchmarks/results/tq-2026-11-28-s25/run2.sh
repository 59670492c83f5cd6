#!/bin/bash
# Session 25, call 2 (one H200): the H200 picks set from call 1's sweeps (v4flash 8192 both GEMMs: three-quarter body;
# dsv3 8192: tail 64 -> 32-token body + three-quarter body) against the previous cache (ab_base/autotune_cache), same
# tree, whole layer, new / base / new / base at v4flash 8192 and dsv3 8192, then v4flash 6144 (served by the 8192
# bucket). First, for dsv3's attribution, the previous pick against the 32 / 64-token body without the three-quarter
# body (sweep_gemm.py --sub-narrow on the previous cache).
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name --format=csv,noheader
TMOE_AUTOTUNE_CACHE=$PWD/ab_base/autotune_cache PYTHONPATH=. timeout 150 python benchmarks/sweep_gemm.py \
    --workload dsv3 --tokens 8192 --sub-narrow --json "$OUT/sweep-dsv3-subnarrow.json" 2>&1 \
    | grep -E "^gemm|FAILED" | cut -c1-175
BASE_CACHE="base:TMOE_AUTOTUNE_CACHE=$PWD/ab_base/autotune_cache"
RUNS="new $BASE_CACHE new $BASE_CACHE" WORKLOADS=v4flash,dsv3 TOKENS=8192 BENCH_TIMEOUT=150 \
    OUT=$OUT/ab8192 bash benchmarks/run_ab.sh > /dev/null
PYTHONPATH=. timeout 30 python benchmarks/report.py --ab "$OUT/ab8192" 2>&1 | tail -4
RUNS="new $BASE_CACHE new" WORKLOADS=v4flash TOKENS=6144 BENCH_TIMEOUT=100 \
    OUT=$OUT/ab6144 bash benchmarks/run_ab.sh > /dev/null
PYTHONPATH=. timeout 30 python benchmarks/report.py --ab "$OUT/ab6144" 2>&1 | tail -3
rm -f "$OUT"/ab*/*.log && tar -czf "$OUT/ab.tgz" -C "$OUT" ab8192 ab6144 && rm -rf "$OUT/ab8192" "$OUT/ab6144"
