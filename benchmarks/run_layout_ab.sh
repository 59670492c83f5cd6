#!/usr/bin/env bash
# One single-GPU device call: weight layouts (kernels/weight_layout.py) against each other. GPU tests with
# TMOE_WEIGHT_LAYOUT=$TEST_LAYOUT (default tiled, the Hopper default since session 6), then bench_layer
# once per entry of LAYOUTS (one process each, same card, CUDA-graph timing), JSON under $OUT.
# Results: benchmarks/NOTES.md "v4" (canonical / quad), "v8" (quad / tiled).
#   bash benchmarks/run_layout_ab.sh            LAYOUTS="quad tiled quad" WORKLOADS=dsv3,gptoss TOKENS=32,128 ...
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 TMOE_AUTOTUNE_CACHE=${TMOE_AUTOTUNE_CACHE:-$PWD/autotune_cache}
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
TMOE_WEIGHT_LAYOUT=${TEST_LAYOUT:-tiled} timeout "${TEST_TIMEOUT:-300}" python -m pytest -q -p no:cacheprovider \
    tests/test_weight_layout.py tests/test_gluon_gemm.py tests/test_layer.py 2>&1 | tee "$OUT/pytest.log" | tail -3
run=0
for layout in ${LAYOUTS:-quad tiled quad}; do
  run=$((run + 1))
  TMOE_WEIGHT_LAYOUT=$layout timeout "${BENCH_TIMEOUT:-150}" python benchmarks/bench_layer.py --no-peers \
      --workloads "${WORKLOADS:-dsv3,v4flash,qwen3}" --tokens "${TOKENS:-1,32,128,512,8192}" \
      --json "$OUT/layer-$run-$layout.json" 2>&1 | grep "^|" | tee "$OUT/layer-$run-$layout.log"
done
