#!/usr/bin/env bash
# One multi-GPU device call: the expert-parallel tests (collective + symm_mem on 2 and 4 GPUs, graph
# replay, 1000 back-to-back calls) and bench_ep on R ranks. Outputs under $OUT.
#   RANKS="4 2" TOKENS=1,128,4096 bash benchmarks/run_ep_suite.sh
#   MODES="separate fused" ...: the symm_mem return modes to time (default auto; fused = GEMM2 writes the
#   results into the sources' home, separate = a return pass after GEMM2)
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
nvidia-smi topo -m > "$OUT/topo.txt" 2>&1
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_TIMEOUT:-240}" python -m pytest -q -s -p no:cacheprovider ${TESTS:-tests/test_ep_collective.py tests/test_ep_symm_mem.py} \
      2>&1 | tee "$OUT/pytest_ep.log" | grep -E "passed|failed|error|calls in|Error|assert" | tail -30
fi
for r in ${RANKS:-4}; do
  for mode in ${MODES:-auto}; do
    timeout "${BENCH_TIMEOUT:-200}" python benchmarks/bench_ep.py --ranks "$r" --transport "${TRANSPORT:-symm_mem}" \
        --tokens "${TOKENS:-1,128,4096}" --return-mode "$mode" --json "$OUT/ep${r}-${mode}.json" 2>&1 | grep -v Warning \
        | tee "$OUT/ep${r}-${mode}.log" | tail -8
  done
done
