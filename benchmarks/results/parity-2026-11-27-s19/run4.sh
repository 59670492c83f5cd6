#!/usr/bin/env bash
# Session 19, call 4 (one H100; the tree with benchmarks/experiments/parity_ring.patch applied, the step's copies
# issued after its decode): GPU tests (bitwise vs Triton incl. the parity configs; time-boxed), then the layer, runs
# base = HEAD 67ef0dd (ab_base: the new decode, ring loops), D = this tree with every ring pick moved to parity rings
# (convert_cache.py down), new = this tree with the cache as is (its p4 s4 / p6 s6 picks run the parity loop).
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1
R=benchmarks/results/parity-2026-11-27-s19
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
timeout "${TEST_TIMEOUT:-180}" python -m pytest -q -x -p no:cacheprovider tests/test_gluon_gemm.py::test_pdl_chain_programmatic_dependent_launch \
    tests/test_gluon_gemm.py::test_gluon_bitwise_equals_triton \
    2>&1 | tail -15 > "$W/pytest.txt"; tail -3 "$W/pytest.txt"
python $R/convert_cache.py autotune_cache "$W/cacheD" down
OUT="$W/ab" WORKLOADS=${WORKLOADS:-gptoss,dsv3,qwen3,v4flash} TOKENS=${TOKENS:-1,8,32,128} BENCH_TIMEOUT=${BT:-75} \
    RUNS="${RUNS:-base D:TMOE_AUTOTUNE_CACHE=$W/cacheD new base D:TMOE_AUTOTUNE_CACHE=$W/cacheD}" \
    bash benchmarks/run_ab.sh > "$W/ab-runs.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" | tee "$W/ab.txt"
rm -f "$W"/ab/*.log; rm -rf "$W/cacheD"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
