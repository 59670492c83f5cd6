#!/usr/bin/env bash
# Session 23, call 5 (four GPUs): the expert-parallel suite at R = 2 and 4 on real ranks (the last 4-GPU run was
# session 14's) with the early-GEMM2 variants, then bench_ep on 4 ranks (dsv3, symm_mem, auto return mode) with its
# bitwise check against one rank holding every expert.
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$W/gpu.txt"
nvidia-smi topo -m > "$W/topo.txt" 2>&1
TMOE_EP_WORLDS=2,4 timeout 330 python -m pytest -q -s -p no:cacheprovider tests/test_ep_collective.py tests/test_ep_symm_mem.py \
    > "$W/pytest_ep.log" 2>&1; echo "pytest rc=$?"
grep -E "passed|failed|error|calls in" "$W/pytest_ep.log" | grep -v "rank [123] " | tail -10
echo "tests: $(( $(date +%s) - T0 )) s"
timeout 200 python benchmarks/bench_ep.py --ranks 4 --workload dsv3 --tokens 1,8,128,4096 --transport symm_mem \
    --json "$W/ep4-dsv3.json" > "$W/ep4-dsv3.log" 2>&1; echo "bench_ep rc=$?"
grep -v Warning "$W/ep4-dsv3.log" | tail -7
echo "total: $(( $(date +%s) - T0 )) s"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
