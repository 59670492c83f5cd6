#!/usr/bin/env bash
# Session 21, call 2 (one H100): register caps on the 4-warp picks (tune_layer_small.py --space cap: 80 / 72 / 64,
# i.e. 6 / 7 / 8 CTAs per SM), whole calls, 3 interleaved rounds; in parallel with the compile warm-up, the simulated
# symm_mem tests (the fused TMA return with the H100 qwen3 GEMM2 pick at one token: an 8-warp half tile, ring 3).
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
T0=$(date +%s)
( timeout 240 python -m pytest -q -p no:cacheprovider tests/test_ep_symm_mem.py > "$W/pytest-ep-symm.txt" 2>&1 ) &
( timeout 240 python benchmarks/tune_layer_small.py --space cap --tokens 1,8,32,128 --workloads gptoss \
    --compile-only > "$W/warm-gptoss.txt" 2>&1 ) &
for wl in qwen3 v4flash dsv3; do
  ( timeout 240 python benchmarks/tune_layer_small.py --space cap --tokens 8,32 --workloads $wl \
      --compile-only > "$W/warm-$wl.txt" 2>&1 ) &
done
wait
echo "warm + tests: $(( $(date +%s) - T0 )) s"; tail -3 "$W/pytest-ep-symm.txt"; tail -n 3 "$W"/warm-*.txt
timeout 150 python benchmarks/tune_layer_small.py --space cap --tokens 1,8,32,128 --workloads gptoss --rounds 3 \
    --json "$W/cap-gptoss.json" 2>&1 | tee "$W/cap-gptoss.txt" | grep -v "^ "
timeout 150 python benchmarks/tune_layer_small.py --space cap --tokens 8,32 --workloads qwen3,v4flash,dsv3 --rounds 3 \
    --json "$W/cap-others.json" 2>&1 | tee "$W/cap-others.txt" | grep -v "^ "
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
