"""Session 17: the shipped GEMM2 picks that spill (benchmarks/audit_picks.py: H100 dsv3 / v4flash T = 2048) against
their non-spilling variants, GEMMs alone (CUDA graph, L2 flushed), three interleaved rounds, bitwise vs the pick."""
import json
import statistics
from dataclasses import replace

import torch

import tmoe
from tmoe.autotune import cache
from tmoe.autotune.timing import time_graph
from tmoe.kernels import grouped_gemm
from tmoe.kernels.routing import build_routing
from tmoe.workloads import WORKLOADS, make_routing, random_mxfp4_weights

T = 2048
for wl_name, fname in (("v4flash", "gemm2_E256_H4096_I2048_K6_w4a8.json"),
                       ("dsv3", "gemm2_E256_H7168_I2048_K8_w4a8.json")):
    wl = WORKLOADS[wl_name]
    e, k, h, i = wl.num_experts, wl.topk, wl.hidden, wl.intermediate
    pick = cache.config_from_dict(json.load(open(f"autotune_cache/NVIDIA_H100_80GB_HBM3/{fname}"))
                                  ["buckets"]["2048"]["best"]["config"])
    cands = [pick, replace(pick, num_warps=8, num_stages=2, overlap=False),
             replace(pick, num_warps=8, num_stages=3, overlap=False)]
    cands = list(dict.fromkeys(cands))
    _, l2 = tmoe.transform_weights_for_mega_moe(random_mxfp4_weights(e, 2 * i, h, seed=1),
                                                random_mxfp4_weights(e, h, i, seed=2))
    idx, _ = make_routing(T, e, k, "uniform", seed=T)
    plan = build_routing(idx.cuda(), e, capacity_slots=T * k)
    torch.manual_seed(0)
    act = (torch.randn(T * k, i, device="cuda") * 0.5).to(torch.bfloat16).view(torch.int16)
    out = torch.zeros(T * k, h, dtype=torch.int16, device="cuda")
    runs, ref, times = {}, None, {c: [] for c in cands}
    for c in cands:
        def run(c=c):
            grouped_gemm.gemm2(act, l2[0], l2[1], plan, out, cfg=c, soft=False, quad=True, tiled=True)
        run()
        torch.cuda.synchronize()
        same = ref is None or torch.equal(out, ref)
        ref = out.clone() if ref is None else ref
        runs[c] = (run, same)
    for _ in range(3):
        for c in cands:
            times[c].append(time_graph(runs[c][0]))
    for n, c in enumerate(cands):
        print(f"{wl_name} T={T} GEMM2 {'pick' if n == 0 else '    '} w{c.num_warps} s{c.num_stages} ovl={int(c.overlap)} "
              f"sub={c.sub_block_m} g={c.group_m}: {statistics.median(times[c]):8.1f} us "
              f"({' '.join(f'{v:.1f}' for v in times[c])}) same={runs[c][1]}", flush=True)
