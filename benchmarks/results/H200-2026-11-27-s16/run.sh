#!/usr/bin/env bash
# Session 16, fifth call (one H200): the full layer table on the current tree and caches (the last full H200 table
# was session 10's), same command as the H100 table of session 15.
SKIP_TESTS=1 bash benchmarks/run_gpu_suite.sh
