#!/usr/bin/env bash
# One single-GPU device call: Nsight Compute on the layer's kernels, one report per case
# (benchmarks/profile_layer.py), then text exports and short tables (benchmarks/ncu_summary.py).
#   CASES="dsv3:128 gptoss:8 dsv3:1 dsv3:2048" bash benchmarks/run_ncu.sh
#   KERNEL_FILTER=regex:wgmma: only the GEMMs; PYTHONPATH=other_tree:. profiles another checkout's kernels
# Under $OUT: ncu-summary.txt (every case's table) and ncu.tar.gz (per case: the .ncu-rep, the raw metrics CSV,
# the details page and the SASS page with per-instruction stall samples).
# NOTES: --clock-control none (the device guide: never change clocks), so times vary with boost like any run;
# the replays serialize each kernel, so compare stall shares and throughputs, not launch overheads.
set -u
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT/ncu"
SECTIONS=${SECTIONS:-"SpeedOfLight MemoryWorkloadAnalysis ComputeWorkloadAnalysis InstructionStats LaunchStats Occupancy SchedulerStats WarpStateStats SourceCounters"}
sect=(); for s in $SECTIONS; do sect+=(--section "$s"); done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
ncu --version | tail -1
for case in ${CASES:-dsv3:128 gptoss:8 dsv3:1 dsv3:2048}; do
  name=$(echo "$case" | tr ':' '-')
  rep="$OUT/ncu/$name"
  echo "== $case" | tee -a "$OUT/ncu-summary.txt"
  timeout "${NCU_TIMEOUT:-240}" ncu --profile-from-start off --clock-control none "${sect[@]}" \
      ${KERNEL_FILTER:+-k "$KERNEL_FILTER"} -f -o "$rep" \
      python benchmarks/profile_layer.py --cases "$case" > "$rep.log" 2>&1
  rc=$?
  grep "^case" "$rep.log" | tee -a "$OUT/ncu-summary.txt"
  if [ $rc != 0 ] || [ ! -f "$rep.ncu-rep" ]; then
    echo "$case: ncu rc=$rc" | tee -a "$OUT/ncu-summary.txt"; tail -15 "$rep.log"; continue
  fi
  ncu -i "$rep.ncu-rep" --page raw --csv > "$rep-raw.csv" 2> "$rep-raw.err"
  ncu -i "$rep.ncu-rep" --page details --print-details all > "$rep-details.txt" 2>&1
  ncu -i "$rep.ncu-rep" --page source --csv --print-source sass > "$rep-sass.csv" 2> "$rep-sass.err"
  python benchmarks/ncu_summary.py "$rep-raw.csv" --sass "$rep-sass.csv" --top "${TOP:-30}" \
      >> "$OUT/ncu-summary.txt" 2>&1 || echo "ncu_summary failed" >> "$OUT/ncu-summary.txt"
done
tar -czf "$OUT/ncu.tar.gz" -C "$OUT" ncu && rm -rf "$OUT/ncu"
tail -c 20000 "$OUT/ncu-summary.txt"
