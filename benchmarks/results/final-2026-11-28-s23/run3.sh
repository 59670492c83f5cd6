#!/usr/bin/env bash
# Session 23, calls 3 (the H100 of call 2, warm), 4 (one H200) and 8 (another H100): the layer table of the final tree and caches
# (every workload, T = 1 .. 8192, uniform routing; the copy / grouped-GEMM baselines in the same process).
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
timeout 540 python benchmarks/bench_layer.py --workloads dsv3,v4flash,gptoss,qwen3 --tokens 1,8,32,128,512,2048,8192 \
    --routing uniform --json "$W/layer.json" > "$W/layer.log" 2>&1; echo "table rc=$?"; grep -v "^|--" "$W/layer.log" | head -40
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
