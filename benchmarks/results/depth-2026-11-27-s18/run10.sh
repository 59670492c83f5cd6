#!/usr/bin/env bash
# Session 18, tenth call (one H100): the PDL chain (kernels/pdl.py) above its 128-token limit, whole calls at
# T = 256 / 512 / 2048 for the four workloads, runs chained (limit 4096) / plain (limit 128) interleaved x 3
# (chain_bench.py patches pdl.CHAIN_MAX_TOKENS, then runs bench_layer.py --no-peers).
set -u
D=benchmarks/results/depth-2026-11-27-s18
OUT=${OUT:-/tmp/tmoe-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
n=0
for limit in 4096 128 4096 128 4096 128; do
  n=$((n + 1))
  PYTHONPATH=. timeout 100 python $D/chain_bench.py $limit --no-peers --workloads qwen3,gptoss,v4flash,dsv3 \
      --tokens 256,512,2048 --json "$OUT/chain-$n-$limit.json" > "$OUT/chain-$n-$limit.log" 2>&1 || tail -5 "$OUT/chain-$n-$limit.log"
done
python - "$OUT" <<'PY'
import glob, json, sys, collections
t = collections.defaultdict(lambda: collections.defaultdict(list))
for f in sorted(glob.glob(sys.argv[1] + "/chain-*.json")):
    limit = f.rsplit("-", 1)[1][:-5]
    for r in json.load(open(f))["rows"]:
        t[(r["workload"], r["tokens"])][limit].append(r["us"])
for k, v in t.items():
    c, p = v["4096"], v["128"]
    print(k, "chained", [round(x, 1) for x in c], "plain", [round(x, 1) for x in p],
          f"{(sum(c) / len(c)) / (sum(p) / len(p)) - 1:+.2%}")
PY
