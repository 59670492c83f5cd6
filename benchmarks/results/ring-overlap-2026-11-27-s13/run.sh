#!/usr/bin/env bash
# Session 13, one device call: GPU bitwise tests with the ring + overlap pairs, the --ring-overlap GEMM sweeps,
# a cache with the sweeps' winners (set_cache_pick --from-sweep, >= 2% faster), and the layer with that cache
# ("new") against the shipped one ("base"), interleaved. Run from the repo root:
#   bash benchmarks/results/ring-overlap-2026-11-27-s13/run.sh
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; R=$OUT/r; mkdir -p "$R"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$R/gpu.txt"
timeout 300 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k "bitwise_equals_triton or pdl_chain" \
    2>&1 | tail -6 | tee "$R/tests.log"
for wt in ${SWEEPS:-qwen3:1,8 gptoss:1,8,32 v4flash:1,8 dsv3:1,8,32}; do
  w=${wt%%:*}; t=${wt#*:}
  timeout 240 python benchmarks/sweep_gemm.py --workload "$w" --tokens "$t" --ring-overlap --json "$R/ringovl-$w.json" \
      > "$R/ringovl-$w.log" 2>&1
  sed 's/ | regs=\([0-9]*\) spills=\([0-9]*\).*/ regs=\1 spills=\2/' "$R/ringovl-$w.log" | grep -v "^\s*$" | cut -c1-230
done
rm -rf /tmp/newcache && cp -r autotune_cache /tmp/newcache
dev=$(python -c "import torch; print(torch.cuda.get_device_name())")
python benchmarks/set_cache_pick.py --device "$dev" --root /tmp/newcache --from-sweep "$R"/ringovl-*.json \
    --min-gain 0.02 2>&1 | tee "$R/picks.log"
cp -r /tmp/newcache "$R/newcache"
OUT=$R/ab BENCH_TIMEOUT=300 WORKLOADS=qwen3,gptoss,v4flash,dsv3 TOKENS=${AB_TOKENS:-1,8,32} \
  RUNS="new:TMOE_AUTOTUNE_CACHE=/tmp/newcache base:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache new:TMOE_AUTOTUNE_CACHE=/tmp/newcache base:TMOE_AUTOTUNE_CACHE=$PWD/autotune_cache" \
  bash benchmarks/run_ab.sh > "$R/ab.log" 2>&1
python benchmarks/report.py --ab "$R/ab" | tee "$R/ab-table.md"
tar -czf "$OUT/r.tgz" -C "$OUT" r
