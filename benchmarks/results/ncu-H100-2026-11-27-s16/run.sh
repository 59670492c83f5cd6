#!/usr/bin/env bash
# Session 16, third call (one GPU): Nsight Compute on the shipped GEMMs where issue 7's targets are not met at small
# and mid T (the picks of session 15's cache): pipes, stalls, memory throughput per GEMM.
CASES="gptoss:8 dsv3:1 qwen3:1 qwen3:512" KERNEL_FILTER=regex:wgmma NCU_TIMEOUT=130 TOP=20 bash benchmarks/run_ncu.sh
