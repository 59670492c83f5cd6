#!/bin/bash
# Prepared in session 25, not run (no H100 was lent): the H100 side of NOTES "v31". On one H100: the 8192-token picks
# against the three-quarter body (v4flash: 192 rows per expert; the others' remainders are small), the winners >= 1% set
# into a copy of the cache, then the layer at 8192 (and 6144, served by the 8192 bucket), new / base / new / base.
# Copy $OUT/cache_new/NVIDIA_H100_80GB_HBM3/*.json into autotune_cache/ afterwards if the layer agrees.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
DEV="$(python -c 'import torch; print(torch.cuda.get_device_name())')"
echo "$DEV"
for spec in v4flash:150 dsv3:150 qwen3:100; do
  w=${spec%%:*}
  timeout "${spec#*:}" python benchmarks/sweep_gemm.py --workload "$w" --tokens 8192 --three-quarter \
      --json "$OUT/sweep-$w.json" 2>&1 | grep -E "^gemm|FAILED" | cut -c1-175
done
rm -rf /tmp/cache_new && cp -r autotune_cache /tmp/cache_new
python benchmarks/set_cache_pick.py --device "$DEV" --root /tmp/cache_new --from-sweep "$OUT"/sweep-*.json \
    --min-gain 0.01 2>&1 | cut -c1-60
mkdir -p "$OUT/cache_new" && cp -r /tmp/cache_new/NVIDIA_H100_80GB_HBM3 "$OUT/cache_new/"
NEW="new:TMOE_AUTOTUNE_CACHE=/tmp/cache_new" BASE="base:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache"
RUNS="$NEW $BASE $NEW $BASE" WORKLOADS=v4flash,dsv3,qwen3 TOKENS=6144,8192 BENCH_TIMEOUT=150 OUT=$OUT/ab \
    bash benchmarks/run_ab.sh > /dev/null
timeout 30 python benchmarks/report.py --ab "$OUT/ab" 2>&1 | tail -8
rm -f "$OUT"/ab/*.log && tar -czf "$OUT/ab.tgz" -C "$OUT" ab cache_new && rm -rf "$OUT/ab" "$OUT/cache_new"
