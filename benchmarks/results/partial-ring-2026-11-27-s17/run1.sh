#!/usr/bin/env bash
# Session 17, first call (one H100):
#   1. experiments/ws_gemm.py at small T: each 8-token tile's A tile decoded by 1-4 partitions taking turns by K step
#      (GEMMs alone, bitwise vs the shipped pick)
#   2. GPU tests of the partial K step through the code ring (K = 2880 bitwise matrix vs the Triton kernel, scale
#      words, the PDL chain)
#   3. layer A/B, gpt-oss (the only K % 128 != 0 workload): this tree vs session 16's (ab_base: git archive 0631ded)
# The tree it ran: 0631ded + experiments/partial_step_ring.patch (measured slower, so not merged) + the ws small-T
# variants; to rerun: git apply benchmarks/experiments/partial_step_ring.patch, and make ab_base as run_ab.sh says.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for spec in qwen3:1,8:70 dsv3:1,8:80 v4flash:1:50; do
  IFS=: read -r wl tok limit <<< "$spec"
  timeout "$limit" python benchmarks/experiments/ws_gemm.py --gpu --workload "$wl" --tokens "$tok" 2>&1 \
      | grep -v Warning | tee "$OUT/ws-$wl.txt" | cut -c1-190
done
timeout 240 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k "2880 or scale_words or pdl_chain" \
    2>&1 | tee "$OUT/tests.log" | tail -3
OUT="$OUT/ab" WORKLOADS=gptoss TOKENS=1,8,32,128 BENCH_TIMEOUT=75 RUNS="new base new base" bash benchmarks/run_ab.sh
python benchmarks/report.py --ab "$OUT/ab" 2>&1 | tee "$OUT/ab.txt" | tail -12
