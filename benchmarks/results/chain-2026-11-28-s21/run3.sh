#!/usr/bin/env bash
# Session 21, call 3 (two H100s): the expert-parallel suite on real ranks with this tree's kernels (not run since
# session 19's decode and session 20's half tiles): test_ep_collective.py + test_ep_symm_mem.py (R = 2), then
# bench_ep.py on 2 ranks (dsv3, symm_mem, auto return mode).
set -u
export OUT=${OUT:-/tmp/tmoe-out}
TEST_TIMEOUT=300 BENCH_TIMEOUT=200 TMOE_EP_WORLDS=2 RANKS=2 TOKENS=1,128,4096 bash benchmarks/run_ep_suite.sh
