#!/usr/bin/env bash
# Session 13, one device call: (1) the GPU bitwise test over the two ring + overlap GEMM pairs only (all 25 shape /
# routing cases; the full test timed out in the first call while compiling on an H200), (2) the small-T K loops
# picked by timing the whole call (tune_layer_small.py), (3) the layer with those picks ("new") vs the shipped
# cache ("base"), interleaved. From the repo root: bash benchmarks/results/t1-layer-tune-2026-11-27-s13/run.sh
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$R/gpu.txt"
PYTHONPATH=.:tests timeout 200 python - <<'PY' 2>&1 | tail -4 | tee "$R/tests.log"
import test_gluon_gemm as t
t.GLUON_G1, t.GLUON_G2 = t.GLUON_G1[-2:], t.GLUON_G2[-2:]     # the ring + overlap pairs
shapes = [(256, 128, 8, 2, False), (384, 640, 8, 2, False), (7168, 2048, 8, 8, False), (2880, 2880, 4, 4, True),
          (160, 96, 4, 3, True)]
runs = [(1, "uniform"), (5, "masked"), (64, "hot_expert"), (300, "duplicates"), (33, "all_masked")]
for s in shapes:
    for r in runs:
        t.test_gluon_bitwise_equals_triton(*s, *r)
print(f"ring + overlap pairs: {len(shapes) * len(runs)} cases bitwise equal to the Triton kernel")
PY
timeout 330 python benchmarks/tune_layer_small.py --tokens ${TOKENS:-1,8} --json "$R/tune.json" 2>&1 | tee "$R/tune.log" \
    | grep -v Warn
rm -rf /tmp/newcache && cp -r autotune_cache /tmp/newcache
dev=$(python -c "import torch; print(torch.cuda.get_device_name())")
python benchmarks/set_cache_pick.py --device "$dev" --root /tmp/newcache --from-sweep "$R/tune.json" --min-gain 0.01 \
    2>&1 | tee "$R/picks.log"
cp -r /tmp/newcache "$R/newcache"
OUT=$R/ab BENCH_TIMEOUT=200 WORKLOADS=qwen3,gptoss,v4flash,dsv3 TOKENS=${TOKENS:-1,8} \
  RUNS="new:TMOE_AUTOTUNE_CACHE=/tmp/newcache base:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache new:TMOE_AUTOTUNE_CACHE=/tmp/newcache base:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache" \
  bash benchmarks/run_ab.sh > "$R/ab.log" 2>&1
python benchmarks/report.py --ab "$R/ab" | tee "$R/ab-table.md"
tar -czf "$OUT/r.tgz" -C "$OUT" r
