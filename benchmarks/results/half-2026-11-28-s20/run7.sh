#!/usr/bin/env bash
# Session 20, call 7 (one H100, the session's last device minutes): benchmarks/run_gpu_tests.py on the final tree,
# eight shards (the device budget ended the call at 342 s: six shards done, call7/shard-*.txt).
mkdir -p "$OUT/t" && nvidia-smi --query-gpu=name --format=csv,noheader
PYTHONPATH=. timeout 345 python benchmarks/run_gpu_tests.py --procs 8 --timeout 330 --out "$OUT/t"
tar -czf "$OUT/tests.tar.gz" -C "$OUT" t && rm -rf "$OUT/t"
