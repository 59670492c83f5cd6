#!/usr/bin/env bash
# Session 16, last call (one H100): the full layer table on the final tree and caches (issue 7's check).
SKIP_TESTS=1 bash benchmarks/run_gpu_suite.sh
