#!/usr/bin/env bash
# Session 16, sixth call (one H100): why N-block-major tiles (GemmConfig.n_fastest, NOTES v19) are faster at 16-64
# tokens — Nsight Compute on dsv3 T = 512 with the shipped cache (n_fastest on) and with cache_tile_major/ (the same
# picks, n_fastest off for the dsv3 512 bucket); and dsv3 T = 2048 with the shipped cache.
set -u
D=benchmarks/results/ncu-order-H100-2026-11-27-s16
BASE=${OUT:-/tmp/tmoe-out}
OUT=$BASE/nfast CASES="dsv3:512 dsv3:2048" KERNEL_FILTER=regex:wgmma NCU_TIMEOUT=150 TOP=10 bash benchmarks/run_ncu.sh \
    > /dev/null 2>&1; grep -v "^  0x" $BASE/nfast/ncu-summary.txt | head -40
OUT=$BASE/tile_major TMOE_AUTOTUNE_CACHE=$PWD/$D/cache_tile_major CASES="dsv3:512" KERNEL_FILTER=regex:wgmma \
    NCU_TIMEOUT=150 TOP=10 bash benchmarks/run_ncu.sh > /dev/null 2>&1; grep -v "^  0x" $BASE/tile_major/ncu-summary.txt | head -20
