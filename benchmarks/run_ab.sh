#!/usr/bin/env bash
# One single-GPU device call: the working tree's kernels against a base revision's, interleaved in
# separate processes on the same card (CUDA-graph timing), after the GPU tests named in TESTS.
# Prepare the base tree here (the device has no git history), then call on the device:
#   git archive <rev> tmoe | (mkdir -p ab_base && tar -x -C ab_base)
#   bash benchmarks/run_ab.sh      # WORKLOADS=gptoss,dsv3 TOKENS=1,128 RUNS="new base new" TESTS="tests/x.py"
# A run LABEL:VAR=VALUE runs this checkout with that environment variable instead (no base tree needed), e.g.
#   RUNS="new:TMOE_PDL=1 base:TMOE_PDL=0 gemm2:TMOE_PDL=gemm2 new:TMOE_PDL=1" bash benchmarks/run_ab.sh
# JSON and full log per run under $OUT (layer-<n>-<new|base>.json / .log); `python benchmarks/report.py --ab $OUT` prints the table.
set -u
# NOTES: both trees read this checkout's autotune cache (a base tree copied without one would fall back to the
# heuristic configs, so its runs would compare configs, not kernels)
export PYTHONUNBUFFERED=1 TMOE_AUTOTUNE_CACHE=${TMOE_AUTOTUNE_CACHE:-$PWD/autotune_cache}
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
BASE=${BASE:-ab_base}
case " ${RUNS:-new base new} " in
  *" base "*) [ -d "$BASE/tmoe" ] || { echo "no base tree at $BASE/tmoe (see the header)"; exit 2; } ;;
esac
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
if [ -n "${TESTS:-}" ]; then
  PYTHONPATH=. timeout "${TEST_TIMEOUT:-240}" python -m pytest -q -p no:cacheprovider $TESTS 2>&1 \
      | tee "$OUT/pytest.log" | tail -4
fi
run=0
for spec in ${RUNS:-new base new}; do
  run=$((run + 1))
  tree=${spec%%:*}; setting=""
  [ "$tree" != "$spec" ] && setting=${spec#*:}
  path=.; [ "$tree" = base ] && [ -z "$setting" ] && path="$BASE:."
  env $setting PYTHONPATH=$path timeout "${BENCH_TIMEOUT:-150}" python benchmarks/bench_layer.py --no-peers \
      --workloads "${WORKLOADS:-gptoss,dsv3,qwen3}" --tokens "${TOKENS:-1,32,128,512}" \
      --json "$OUT/layer-$run-$tree.json" > "$OUT/layer-$run-$tree.log" 2>&1
  rc=$?
  grep "^|" "$OUT/layer-$run-$tree.log"
  [ $rc = 0 ] || { echo "run $run ($tree) failed, rc=$rc:"; grep -v "^|" "$OUT/layer-$run-$tree.log" | tail -15; }
done
