#!/usr/bin/env bash
# Session 15, the 4-GPU call (asked for nvidia-h100-x4; 4 x H200 came): EP tests incl. the TMA return variants and
# symm_mem_tma_fused_triton (a Triton GEMM2 asked for the fused TMA return), then bench_ep dsv3 1 / 128 / 4096.
RANKS=4 MODES=auto TOKENS=1,128,4096 TESTS="tests/test_ep_collective.py tests/test_ep_symm_mem.py tests/test_tma_copy.py" \
    TEST_TIMEOUT=330 BENCH_TIMEOUT=200 bash benchmarks/run_ep_suite.sh
