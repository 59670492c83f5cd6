#!/bin/bash
# Session 24, call 4 (one H100): the routing scan as one program per 8 experts (v29) — GPU routing tests, the layer
# A/B against HEAD a675e0d's tree (ab_base/, same autotune cache) at 512 / 2048 / 8192 tokens, and the timelines.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
TESTS="tests/test_routing.py tests/test_layer.py" RUNS="new base new base" WORKLOADS=qwen3,dsv3,gptoss \
    TOKENS=512,2048,8192 BENCH_TIMEOUT=120 bash benchmarks/run_ab.sh
PYTHONPATH=. timeout 60 python benchmarks/report.py --ab "$OUT" 2>&1 | tail -20
PYTHONPATH=. timeout 90 python benchmarks/layer_timeline.py --cases qwen3:8192,dsv3:2048 --modes 1 --json "$OUT/timeline.json" \
    2>&1 | grep -v -i warn | grep -i -E "^qwen|^dsv|kernel|scan|histogram|scatter|^ *_"
