#!/usr/bin/env bash
# Session 20, call 5 (one H100): where a small call's GEMM time goes — the call's kernels in graph replays
# (layer_timeline.py, TMOE_PDL=1) and Nsight Compute on the two GEMMs with per-instruction stall samples, summarized
# with the hottest loop's (the K loop's) share of them against the program's tile search, ring prologue and epilogue
# (ncu_summary.py).
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
timeout 150 python benchmarks/layer_timeline.py --cases ${CASES_T:-qwen3:1,gptoss:1,dsv3:1,gptoss:8,dsv3:8} --modes 1 \
    --json "$W/timeline.json" 2>&1 | grep -v Warning | tee "$W/timeline.txt"
echo "timeline: $(( $(date +%s) - T0 )) s"
OUT="$W/ncu" CASES="${CASES:-qwen3:1 gptoss:1 dsv3:1 gptoss:8 dsv3:8}" KERNEL_FILTER=regex:wgmma NCU_TIMEOUT=120 TOP=12 \
    bash benchmarks/run_ncu.sh > "$W/ncu-run.txt" 2>&1
grep -E "^==|^case|µs|stalls|hottest|instructions," "$W/ncu/ncu-summary.txt"
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
