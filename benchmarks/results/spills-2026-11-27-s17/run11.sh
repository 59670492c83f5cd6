#!/usr/bin/env bash
# Session 17, eleventh call (one H100): the two spilling H100 picks (audit_picks.py) vs their non-spilling variants.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 150 python benchmarks/results/spills-2026-11-27-s17/spill_ab.py 2>&1 | grep -v Warning | tee "$OUT/spill_ab.txt"
