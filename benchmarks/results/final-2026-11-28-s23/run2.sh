#!/usr/bin/env bash
# Session 23, call 2 (one H100): the single-GPU test suite of the final tree in eight parallel shards (the last full
# GPU run was session 20's; since then: early GEMM2 (kernels, picks), bench_ep's one-rank check).
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
G=tests/test_gluon_gemm.py
shard() { local name=$1; shift; ( TMOE_HYPOTHESIS_PROFILE=ci timeout 480 python -m pytest -q -p no:cacheprovider \
    --durations=5 "$@" > "$W/pytest-$name.txt" 2>&1; echo "rc=$?" >> "$W/pytest-$name.txt" ) & }
shard b1 $G -k "bitwise_equals_triton and (256-128 or 384-640)"
shard b2 $G -k "bitwise_equals_triton and 7168"
shard b3 $G -k "bitwise_equals_triton and 2880"
shard b4 $G -k "bitwise_equals_triton and 160-96"
shard g5 $G -k "not bitwise_equals_triton"
shard k6 tests/test_layer.py tests/test_pdl.py tests/test_quant.py tests/test_routing.py tests/test_wgmma_asm.py \
    tests/test_tma_copy.py tests/test_activation_oai.py tests/test_layer_backends.py
shard r7 tests/test_backend.py tests/test_router.py tests/test_formats.py tests/test_gluon_launch.py \
    tests/test_checkpoints.py tests/test_autotune.py tests/test_reference.py tests/test_weight_layout.py
shard s8 tests/test_benchmark_scripts.py tests/test_from_checkpoint.py tests/test_demo.py tests/test_ep_symm_mem.py
wait
echo "tests: $(( $(date +%s) - T0 )) s"
for f in "$W"/pytest-*.txt; do echo "$(basename $f): $(grep -E '(passed|failed|error)' $f | tail -1) $(tail -1 $f)"; done
grep -h -E "^(FAILED|ERROR)" "$W"/pytest-*.txt | head -20
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
