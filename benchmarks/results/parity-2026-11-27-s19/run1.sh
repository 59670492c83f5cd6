#!/usr/bin/env bash
# Session 19, call 1 (one H100; the tree with benchmarks/experiments/parity_ring.patch applied): the GPU tests of the new "arith" decode (two words per call, one scale word per two
# groups) and of the rings by step parity (bitwise vs the Triton kernels, PDL chain), then the layer, interleaved:
# new = this tree, same picks (new decode); base = session 18's tree f315ebc (ab_base: old decode, same picks);
# D / U = this tree with every 4-warp ring pick moved to parity rings (convert_cache.py down / up).
# Everything comes back as one tarball (the device returns a few files at most).
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1
R=benchmarks/results/parity-2026-11-27-s19
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee "$W/gpu.txt"
timeout "${TEST_TIMEOUT:-270}" python -m pytest -q -x -p no:cacheprovider ${TESTS:-tests/test_gluon_gemm.py tests/test_pdl.py} \
    2>&1 | tail -15 > "$W/pytest.txt"; tail -3 "$W/pytest.txt"
python $R/convert_cache.py autotune_cache "$W/cacheD" down
python $R/convert_cache.py autotune_cache "$W/cacheU" up
OUT="$W/ab" WORKLOADS=${WORKLOADS:-gptoss,dsv3,qwen3,v4flash} TOKENS=${TOKENS:-1,8,32,128} BENCH_TIMEOUT=${BT:-75} \
    RUNS="${RUNS:-new base D:TMOE_AUTOTUNE_CACHE=$W/cacheD U:TMOE_AUTOTUNE_CACHE=$W/cacheU}" \
    bash benchmarks/run_ab.sh > "$W/ab-runs.txt" 2>&1
python benchmarks/report.py --ab "$W/ab" | tee "$W/ab.txt"
rm -f "$W"/ab/*.log; rm -rf "$W/cacheD" "$W/cacheU"
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
