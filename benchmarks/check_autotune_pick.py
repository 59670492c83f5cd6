"""Show that the layer picks the shipped autotune config on this GPU, and what it buys.

    python benchmarks/check_autotune_pick.py [--workload gptoss] [--tokens 32,128,512]

For each T: the config `select_config` returns (cache) vs the built-in heuristic, and the whole
layer timed with each (CUDA-graph replays), checking the two outputs are bitwise equal.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ceilings import time_graph  # noqa: E402
from tmoe.workloads import WORKLOADS, make_routing, random_mxfp4_weights  # noqa: E402

import tmoe  # noqa: E402
from tmoe.autotune import cache  # noqa: E402
from tmoe.kernels import configs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="gptoss")
    ap.add_argument("--tokens", default="32,128,512")
    args = ap.parse_args()
    wl = WORKLOADS[args.workload]
    e, k, h, i = wl.num_experts, wl.topk, wl.hidden, wl.intermediate
    name = cache.device_name()
    l1, l2 = tmoe.transform_weights_for_mega_moe(random_mxfp4_weights(e, 2 * i, h, seed=1),
                                                 random_mxfp4_weights(e, h, i, seed=2))
    tokens = [int(t) for t in args.tokens.split(",")]
    buf = tmoe.get_symm_buffer_for_mega_moe(None, e, max(tokens), k, h, i)
    print(f"{name}: workload {wl.name}")
    for t in tokens:
        idx, tw = make_routing(t, e, k, "uniform", seed=t)
        tmoe.layer.fill_buffer(buf, torch.randn(t, h, device="cuda").to(torch.bfloat16), idx, tw)
        key = dict(num_experts=e, hidden=h, intermediate=i, topk=k, device_name=name)
        picked = [configs.select_config(kn, t * k, e, False, **key) for kn in ("gemm1", "gemm2")]
        heur = [configs.heuristic_config(kn, t * k, e, False) for kn in ("gemm1", "gemm2")]
        ys = []
        times = []
        for c1, c2 in (picked, heur):
            y = torch.empty(t, h, dtype=torch.bfloat16, device="cuda")
            fn = lambda: tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, activation_clamp=wl.clamp, gemm1_config=c1,  # noqa: E731
                                               gemm2_config=c2)
            times.append(time_graph(fn))
            ys.append(y.clone())
        same = torch.equal(ys[0].view(torch.int16), ys[1].view(torch.int16))
        print(f"T={t:5}: cache gemm1 {picked[0]} | heuristic gemm1 {heur[0]}")
        print(f"         layer {times[0]:.1f} us (cache) vs {times[1]:.1f} us (heuristic) -> {times[1] / times[0]:.2f}x; "
              f"bitwise equal: {same}")


if __name__ == "__main__":
    main()
