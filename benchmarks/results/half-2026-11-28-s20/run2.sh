#!/usr/bin/env bash
# Session 20, call 2 (one H100): the new pick (qwen3 GEMM2 T = 1: the 8-warp half tile) A/B against the cache without
# it (ab_base/autotune_cache), the single-GPU test suite in seven parallel shards (the GPU tests of the final tree:
# session 19 left the bitwise matrix unfinished), then the layer table with the time left.
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
OUT="$W/ab" WORKLOADS=qwen3 TOKENS=1,8 BENCH_TIMEOUT=60 RUNS="new old:TMOE_AUTOTUNE_CACHE=$PWD/ab_base/autotune_cache new old:TMOE_AUTOTUNE_CACHE=$PWD/ab_base/autotune_cache new old:TMOE_AUTOTUNE_CACHE=$PWD/ab_base/autotune_cache" \
    bash benchmarks/run_ab.sh > "$W/ab-runs.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" | tee "$W/ab.txt"; rm -f "$W"/ab/*.log
echo "A/B: $(( $(date +%s) - T0 )) s"
G=tests/test_gluon_gemm.py
shard() { local name=$1; shift; ( TMOE_HYPOTHESIS_PROFILE=ci timeout 330 python -m pytest -q -p no:cacheprovider \
    --durations=5 "$@" > "$W/pytest-$name.txt" 2>&1; echo "rc=$?" >> "$W/pytest-$name.txt" ) & }
shard b1 $G -k "bitwise_equals_triton and (256-128 or 384-640)"
shard b2 $G -k "bitwise_equals_triton and 7168"
shard b3 $G -k "bitwise_equals_triton and 2880"
shard b4 $G -k "bitwise_equals_triton and 160-96"
shard g5 $G -k "not bitwise_equals_triton"
shard k6 tests/test_layer.py tests/test_pdl.py tests/test_quant.py tests/test_routing.py tests/test_wgmma_asm.py \
    tests/test_tma_copy.py tests/test_activation_oai.py tests/test_layer_backends.py
shard r7 tests/test_backend.py tests/test_router.py tests/test_formats.py tests/test_gluon_launch.py \
    tests/test_checkpoints.py tests/test_autotune.py tests/test_reference.py tests/test_weight_layout.py \
    tests/test_benchmark_scripts.py tests/test_from_checkpoint.py tests/test_demo.py
wait
echo "tests: $(( $(date +%s) - T0 )) s"
for f in "$W"/pytest-*.txt; do echo "$(basename $f): $(grep -E '(passed|failed|error)' $f | tail -1) $(tail -1 $f)"; done
LEFT=$(( 560 - ($(date +%s) - T0) ))
if [ $LEFT -gt 120 ]; then
  timeout $LEFT python benchmarks/bench_layer.py --workloads dsv3,v4flash,gptoss,qwen3 --tokens 1,8,32,128,512,2048,8192 \
      --routing uniform --json "$W/layer.json" > "$W/layer.log" 2>&1; echo "table rc=$?"; grep "^|" "$W/layer.log" | head -40
fi
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
