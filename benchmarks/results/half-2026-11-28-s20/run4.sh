#!/usr/bin/env bash
# Session 20, call 4 (one H200, needs_h200): half tiles at T = 1 on the H200 for qwen3 / gpt-oss (tune_layer_small.py
# --space half: compiled and checked in parallel, then timed as whole calls, 3 rounds), then the layer table.
# (Call 3 ran run3.sh asking for nvidia-h200 without needs_h200 and got the warm H100: a second H100 run.)
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
for wl in qwen3 gptoss; do
  ( timeout 200 python benchmarks/tune_layer_small.py --space half --tokens 1 --workloads $wl --compile-only \
      > "$W/warm-$wl.txt" 2>&1 ) &
done
wait
echo "warm: $(( $(date +%s) - T0 )) s"; tail -n 2 "$W"/warm-*.txt
timeout 150 python benchmarks/tune_layer_small.py --space half --tokens 1 --workloads qwen3,gptoss --rounds 3 --json "$W/half.json" 2>&1 \
    | tee "$W/half.txt" | grep -v "^ "
LEFT=$(( 560 - ($(date +%s) - T0) ))
timeout $LEFT python benchmarks/bench_layer.py --workloads dsv3,v4flash,gptoss,qwen3 --tokens 1,8,32,128,512,2048,8192 \
    --routing uniform --json "$W/layer.json" > "$W/layer.log" 2>&1; echo "table rc=$?"; grep -v "^|--" "$W/layer.log" | head -40
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
