#!/usr/bin/env bash
# One single-GPU device call: the quad weight byte order (kernels/weight_layout.py, the Hopper default
# since 2026-11-27) against canonical. GPU tests with TMOE_WEIGHT_LAYOUT=quad, then bench_layer
# canonical / quad / canonical (one process each, same card, CUDA-graph timing), JSON under $OUT.
# Results of the first run: benchmarks/NOTES.md "v4".
#   bash benchmarks/run_layout_ab.sh            WORKLOADS=dsv3,v4flash TOKENS=1,128,8192 ...
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
TMOE_WEIGHT_LAYOUT=quad timeout "${TEST_TIMEOUT:-300}" python -m pytest -q -p no:cacheprovider \
    tests/test_weight_layout.py tests/test_gluon_gemm.py tests/test_layer.py 2>&1 | tee "$OUT/pytest_quad.log" | tail -3
run=0
for layout in canonical quad canonical; do
  run=$((run + 1))
  TMOE_WEIGHT_LAYOUT=$layout timeout "${BENCH_TIMEOUT:-150}" python benchmarks/bench_layer.py --no-peers \
      --workloads "${WORKLOADS:-dsv3,v4flash,qwen3}" --tokens "${TOKENS:-1,32,128,512,8192}" \
      --json "$OUT/layer-$run-$layout.json" 2>&1 | grep "^|" | tee "$OUT/layer-$run-$layout.log"
done
