#!/bin/bash
# Session 26, last call (one H200): the final tree (the TMA ring on the full and three-quarter bodies; the sub body on
# cp.async after call 5) with this session's H200 picks against the session's starting cache (ab_base/autotune_cache),
# whole layer at T = 8192, new / base / new / base; then the single-GPU test suite in parallel shards (every file but
# the EP ones and the offline sm_90 compile test, run on CPU).
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name --format=csv,noheader
BASE_CACHE="base:TMOE_AUTOTUNE_CACHE=$PWD/ab_base/autotune_cache"
RUNS="new $BASE_CACHE new $BASE_CACHE" WORKLOADS=dsv3,v4flash,gptoss,qwen3 TOKENS=8192 BENCH_TIMEOUT=150 \
    OUT=$OUT/ab8192 bash benchmarks/run_ab.sh > /dev/null
PYTHONPATH=. timeout 30 python benchmarks/report.py --ab "$OUT/ab8192" 2>&1 | tail -6
rm -f "$OUT"/ab8192/*.log && tar -czf "$OUT/ab.tgz" -C "$OUT" ab8192 && rm -rf "$OUT/ab8192"
PYTHONPATH=. timeout 360 python benchmarks/run_gpu_tests.py --procs 14 --timeout 340 --out /tmp/t \
    --exclude "tests/test_ep_*.py" --exclude tests/test_compile_sm90.py 2>&1 | tail -16
grep -h -E "^FAILED|^ERROR" /tmp/t/shard-*.txt | head -20
tar -czf "$OUT/shards.tgz" -C /tmp t
