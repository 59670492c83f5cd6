#!/usr/bin/env bash
# One device call: the test suite, then the quantizer and layer benchmarks. Outputs under $OUT.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
# NOTES: one pytest process ran ~50% of the single-GPU suite in 420 s (session 14; most of it Triton compiling Gluon
# kernels, CPU work), so the tests run as PROCS parallel pytest processes (benchmarks/run_gpu_tests.py: the slow
# GPU tests spread over the shards; session 20, one H100: 96% of the single-GPU suite in 382 s with 7 hand-made). TESTS
# picks files (e.g. TESTS="tests/test_gluon_gemm.py"), SKIP_TESTS=1 none; shard logs under $OUT/tests/. The EP
# files want 2-4 GPUs: run_ep_suite.sh.
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  python benchmarks/run_gpu_tests.py --procs "${PROCS:-8}" --timeout "${TEST_TIMEOUT:-480}" --out "$OUT/tests" \
      ${TESTS:-tests} 2>&1 | tee "$OUT/pytest.log"
fi
timeout 120 python benchmarks/bench_quant.py --json "$OUT/quant.json" 2>&1 | tee "$OUT/quant.log"
timeout "${LAYER_TIMEOUT:-300}" python benchmarks/bench_layer.py --workloads "${WORKLOADS:-dsv3,v4flash,gptoss,qwen3}" \
    --tokens "${TOKENS:-1,8,32,128,512,2048,8192}" --routing "${ROUTING:-uniform}" --json "$OUT/layer.json" 2>&1 | tee "$OUT/layer.log"
