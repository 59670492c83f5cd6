#!/bin/bash
# Prepared in session 26, not run (no H100 was lent): the H100 side of NOTES "v31" and "v33" in one call. On one H100:
# the 8192-token picks against the three-quarter body (session 25's next_h100.sh), the winners >= 1% set into a copy of
# the cache; then, from that copy, each pick against the TMA-fed activation ring (sweep_gemm.py --tma-b: GEMM1 timed
# with its row copy), the winners >= 2% set; then the layer at 8192, new / base / new / base.
# Copy $OUT/cache_new/NVIDIA_H100_80GB_HBM3/*.json into autotune_cache/ afterwards if the layer agrees.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
DEV="$(python -c 'import torch; print(torch.cuda.get_device_name())')"
echo "$DEV"
for w in v4flash dsv3 qwen3; do
  timeout 110 python benchmarks/sweep_gemm.py --workload "$w" --tokens 8192 --three-quarter \
      --json "$OUT/sweep-tq-$w.json" 2>&1 | grep -E "^gemm|FAILED" | cut -c1-175
done
rm -rf /tmp/cache_new && cp -r autotune_cache /tmp/cache_new
python benchmarks/set_cache_pick.py --device "$DEV" --root /tmp/cache_new --from-sweep "$OUT"/sweep-tq-*.json \
    --min-gain 0.01 2>&1 | cut -c1-60
for w in dsv3 v4flash gptoss qwen3; do
  TMOE_AUTOTUNE_CACHE=/tmp/cache_new timeout 110 python benchmarks/sweep_gemm.py --workload "$w" --tokens 8192 \
      --tma-b --json "$OUT/sweep-tma-$w.json" 2>&1 | grep -E "^gemm|FAILED" | cut -c1-175
done
python benchmarks/set_cache_pick.py --device "$DEV" --root /tmp/cache_new --from-sweep "$OUT"/sweep-tma-*.json \
    --min-gain 0.02 2>&1 | cut -c1-60
mkdir -p "$OUT/cache_new" && cp -r /tmp/cache_new/NVIDIA_H100_80GB_HBM3 "$OUT/cache_new/"
NEW="new:TMOE_AUTOTUNE_CACHE=/tmp/cache_new" BASE="base:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache"
RUNS="$NEW $BASE $NEW $BASE" WORKLOADS=dsv3,v4flash,gptoss,qwen3 TOKENS=8192 BENCH_TIMEOUT=150 OUT=$OUT/ab \
    bash benchmarks/run_ab.sh > /dev/null
timeout 30 python benchmarks/report.py --ab "$OUT/ab" 2>&1 | tail -8
rm -f "$OUT"/ab/*.log && tar -czf "$OUT/ab.tgz" -C "$OUT" ab cache_new && rm -rf "$OUT/ab" "$OUT/cache_new"
