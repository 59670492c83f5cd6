#!/bin/bash
# Session 26, call 1 (one H200): the three-quarter body (NOTES "v31") on the small tiles of the mid buckets, where an
# expert's last tile often holds between 1/2 and 3/4 of its rows (qwen3 T = 512: 32 +- 6 rows per expert in 64-token
# tiles; v4flash T = 2048: 48 +- 7; dsv3 / gpt-oss T = 512: 16 +- 4 in 32-token tiles): GEMMs alone, the H200 pick vs
# the same tile with the body, uncapped and under the register cap that keeps the pick's CTAs per SM (offline: the
# body takes 29-66 registers more uncapped; NOTES "v32"); every row bitwise equal to the pick.
set -u
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 PYTHONPATH=.
nvidia-smi --query-gpu=name --format=csv,noheader
for spec in qwen3:512:128 v4flash:2048:128 gptoss:512:128 dsv3:512:96 qwen3:2048:; do
  IFS=: read -r w toks caps <<< "$spec"
  timeout 150 python benchmarks/sweep_gemm.py --workload "$w" --tokens "$toks" --three-quarter --tq-caps "$caps" \
      --json "$OUT/sweep-$w-$toks.json" 2>&1 | grep -E "^gemm|FAILED" | cut -c1-200
done
