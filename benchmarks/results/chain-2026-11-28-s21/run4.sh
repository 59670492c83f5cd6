#!/usr/bin/env bash
# Session 21, call 4 (one H100): early GEMM2 (per-expert row counters, TMOE_EARLY_GEMM2).
# 1. the GPU tests it touches, in parallel: test_gluon_gemm (early + PDL chain), test_pdl, test_routing, test_layer,
#    test_ep_symm_mem (simulated ranks on one GPU);
# 2. layer A/B, TMOE_EARLY_GEMM2=1 / 0 interleaved, four workloads, T = 1-2048 (run_ab.sh);
# 3. the kernel timeline of gpt-oss T = 8 and dsv3 T = 8 with it on and off.
set -u
export OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
T0=$(date +%s)
( timeout 280 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k "early or pdl_chain" \
    > "$W/pytest-gemm.txt" 2>&1 ) &
( timeout 280 python -m pytest -q -p no:cacheprovider tests/test_pdl.py tests/test_routing.py tests/test_layer.py \
    > "$W/pytest-layer.txt" 2>&1 ) &
( timeout 280 python -m pytest -q -p no:cacheprovider tests/test_ep_symm_mem.py > "$W/pytest-ep.txt" 2>&1 ) &
wait
echo "tests: $(( $(date +%s) - T0 )) s"; tail -2 "$W"/pytest-*.txt
OUT=$W/ab WORKLOADS=gptoss,dsv3,qwen3,v4flash TOKENS=1,8,32,128,512,2048 BENCH_TIMEOUT=120 \
  RUNS="early:TMOE_EARLY_GEMM2=1 off:TMOE_EARLY_GEMM2=0 early:TMOE_EARLY_GEMM2=1 off:TMOE_EARLY_GEMM2=0" \
  bash benchmarks/run_ab.sh > "$W/ab.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" 2>&1 | tee "$W/ab-report.txt" | tail -40
for e in 1 0; do
  TMOE_EARLY_GEMM2=$e timeout 60 python benchmarks/layer_timeline.py --cases gptoss:8,dsv3:8,qwen3:1 --modes 1 \
      > "$W/timeline-early$e.txt" 2>&1
  grep -A9 "gptoss T=8" "$W/timeline-early$e.txt" | head -10
done
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
