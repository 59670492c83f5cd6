#!/usr/bin/env bash
# Session 23, call 1 (two GPUs): the expert-parallel suite on real ranks with the new early-GEMM2 variants
# (collective / symm_mem / symm_mem fused TMA return with an early pair, and 1000 stress calls with it), then
# bench_ep on 2 ranks with its new bitwise check against one rank holding every expert: dsv3 and gpt-oss at the
# token counts whose shipped picks start GEMM2 early (dsv3 8 / 128, gpt-oss 8 on the H100) and 1 / 4096.
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$W/gpu.txt"
TMOE_EP_WORLDS=2 timeout 300 python -m pytest -q -s -p no:cacheprovider tests/test_ep_collective.py tests/test_ep_symm_mem.py \
    > "$W/pytest_ep.log" 2>&1; echo "pytest rc=$?"
grep -E "passed|failed|error|calls in" "$W/pytest_ep.log" | tail -14
echo "tests: $(( $(date +%s) - T0 )) s"
for wl in dsv3:1,8,128,4096 gptoss:1,8,128; do
  timeout 170 python benchmarks/bench_ep.py --ranks 2 --workload ${wl%%:*} --tokens ${wl#*:} --transport symm_mem \
      --json "$W/ep2-${wl%%:*}.json" > "$W/ep2-${wl%%:*}.log" 2>&1; echo "bench_ep ${wl%%:*} rc=$?"
  grep -v Warning "$W/ep2-${wl%%:*}.log" | tail -7
done
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
