#!/usr/bin/env bash
# Session 23, call 6 (one H100): every hypothesis property test with the "gpu" profile (100 examples each; the GPU runs
# so far used the CI profile's 12), in four parallel shards, with hypothesis's statistics (examples run per test).
set -u
OUT=${OUT:-/tmp/tmoe-out}; W=$OUT/w; mkdir -p "$W"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
export TMOE_HYPOTHESIS_PROFILE=gpu
T0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$W/gpu.txt"
shard() { local name=$1; shift; ( timeout 450 python -m pytest -q -p no:cacheprovider --hypothesis-show-statistics \
    "$@" > "$W/pytest-$name.txt" 2>&1; echo "rc=$?" >> "$W/pytest-$name.txt" ) & }
shard p1 tests/test_layer.py::test_layer_matches_reference
shard p2 tests/test_activation_oai.py::test_activation_and_biases_match_reference tests/test_quant.py::test_random_rows_bitwise \
    tests/test_routing.py::test_sorted_slots_match_oracle tests/test_gluon_launch.py::test_launches_cover_every_tile
shard p3 tests/test_router.py::test_property_kernel_matches_reference tests/test_reference.py::test_reference_matches_emulation_property \
    tests/test_backend.py::test_layout_roundtrip_and_independent_property tests/test_backend.py::test_inverse_direction_roundtrip \
    tests/test_formats.py
shard p4 tests/test_ep_symm_mem.py::test_symm_mem_repeated_calls_property
wait
echo "tests: $(( $(date +%s) - T0 )) s"
for f in "$W"/pytest-*.txt; do echo "$(basename $f): $(grep -E '(passed|failed|error)' $f | tail -1) $(tail -1 $f)"; done
grep -h -E "^(FAILED|ERROR)|passing examples" "$W"/pytest-*.txt | head -40
tar -czf "$OUT/call.tar.gz" -C "$W" . && rm -rf "$W"
