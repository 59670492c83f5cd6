"""The main job: run the fused W4A8 MoE layer once, check it against the float64 reference, time it.

    python -m tmoe                         # GPU: dsv3 shape, 128 tokens; CPU: a small problem (interpreter)
    python -m tmoe --workload gptoss --tokens 512
    python -m tmoe --workload small --tokens 16

On a machine without a GPU the Triton kernels run under the Triton interpreter (TRITON_INTERPRET=1
is set automatically), which is slow, so the default there is a small problem.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")



def main(argv=None) -> int:
    from tmoe.workloads import WORKLOADS as BENCH, random_mxfp4_weights

    workloads = {n: (w.num_experts, w.topk, w.hidden, w.intermediate, w.clamp) for n, w in BENCH.items()}
    workloads["small"] = (8, 2, 256, 128, None)
    gpu = torch.cuda.is_available()
    ap = argparse.ArgumentParser(prog="python -m tmoe", description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=sorted(workloads), default="dsv3" if gpu else "small")
    ap.add_argument("--tokens", type=int, default=128 if gpu else 16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-check", action="store_true", help="skip the float64 reference comparison")
    args = ap.parse_args(argv)

    import tmoe
    from tmoe.layer import fill_buffer

    e, k, h, i, clamp = workloads[args.workload]
    t = args.tokens
    dev = torch.device("cuda" if gpu else "cpu")
    where = torch.cuda.get_device_name() if gpu else "CPU, Triton interpreter"
    print(f"tmoe {tmoe.__version__}: workload {args.workload} (E={e}, top-k={k}, H={h}, I={i}, clamp={clamp}), "
          f"T={t} tokens on {where}")
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    w1, w1_sf = random_mxfp4_weights(e, 2 * i, h, device=dev, generator=gen)
    w2, w2_sf = random_mxfp4_weights(e, h, i, device=dev, generator=gen)
    x = torch.randn(t, h, generator=gen, device=dev).to(torch.bfloat16)
    scores = torch.rand(t, e, generator=gen, device=dev)
    topk_weights, topk_idx = scores.topk(k, dim=-1)

    buf = tmoe.get_symm_buffer_for_mega_moe(None, e, t, k, h, i, device=dev)
    l1, l2 = tmoe.transform_weights_for_mega_moe((w1, w1_sf), (w2, w2_sf))
    y = torch.full((t, h), float("nan"), dtype=torch.bfloat16, device=dev)

    def call():
        fill_buffer(buf, x, topk_idx, topk_weights)                 # MXFP8 quantize + routing copy
        tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, activation_clamp=clamp)

    from tmoe.compute import ExpertOptions, gemm_configs
    from tmoe.kernels.numerics import soft_numerics
    for name, cfg in zip(("GEMM1", "GEMM2"), gemm_configs(ExpertOptions(), t * k, e, dev, soft_numerics(x), num_experts=e,
                                                         hidden=h, intermediate=i, topk=k)):
        print(f"{name} tiles: {cfg.kernel} kernel, block_m={cfg.block_m} block_n={cfg.block_n} "
              f"swap_ab={cfg.swap_ab} warps={cfg.num_warps} stages={cfg.num_stages}")
    start = time.perf_counter()
    call()
    if gpu:
        torch.cuda.synchronize()
    first = time.perf_counter() - start
    print(f"first call (includes Triton compilation): {first:.2f} s")

    ok = True
    if not args.no_check:
        ref = tmoe.reference_moe(buf.x[:t], buf.x_sf[:t], topk_idx, topk_weights,
                                 tmoe.MoEWeights(w1, w1_sf, w2, w2_sf), activation_clamp=clamp)
        diff = tmoe.calc_diff(y, ref)
        nan = bool(torch.isnan(y).any())
        ok = diff <= 1e-4 and not nan
        print(f"check vs float64 reference: calc_diff = {diff:.2e} (limit 1e-4), NaN = {nan} -> "
              f"{'PASS' if ok else 'FAIL'}")

    slots = int((topk_idx >= 0).sum())
    touched = int(torch.unique(topk_idx).numel())
    flops = 2 * 3 * h * i * slots
    wbytes = touched * 3 * h * i * (0.5 + 1 / 32)
    if gpu:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call()
        graph.replay()
        torch.cuda.synchronize()
        reps = 20
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        ev[0].record()
        for _ in range(reps):
            graph.replay()
        ev[1].record()
        torch.cuda.synchronize()
        us = ev[0].elapsed_time(ev[1]) * 1e3 / reps
        label = "CUDA-graph replay (quantize + layer)"
    else:
        start = time.perf_counter()
        call()
        us = (time.perf_counter() - start) * 1e6
        label = "interpreter call (not a performance number)"
    print(f"{label}: {us:.1f} us | {flops / us / 1e6:.2f} TFLOP/s | MXFP4 weights of {touched} experts "
          f"streamed at {wbytes / us / 1e3:.0f} GB/s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
