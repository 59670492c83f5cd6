"""GPU check of the warp-specialized prefill experiment (ws_gemm.py) against the shipped Gluon kernel.

    PYTHONPATH=. python benchmarks/experiments/check_ws.py [--workloads dsv3,v4flash] [--tokens 2048,8192]
    python benchmarks/experiments/check_ws.py --offline      # no GPU: compile for sm_90, print SASS facts

First a small problem with expert counts around every tile boundary, then each workload: GEMM1 and GEMM2
outputs must be bitwise those of the shipped 8-warp Gluon kernel (same tile sizes, no tail split), then
both are timed (CUDA graphs, L2 flushed). Prints one table; `--json` writes the rows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))

import tmoe  # noqa: E402
from tmoe.autotune.timing import time_graph  # noqa: E402
from tmoe.kernels import grouped_gemm  # noqa: E402
from tmoe.kernels.configs import GemmConfig  # noqa: E402
from tmoe.kernels.quant import mxfp8_to_bf16  # noqa: E402
from tmoe.kernels.routing import build_routing  # noqa: E402
from tmoe.kernels.weight_layout import is_quad  # noqa: E402
from tmoe.workloads import WORKLOADS, make_routing, random_mxfp4_weights  # noqa: E402


def offline() -> None:
    os.environ["TRITON_INTERPRET"] = "0"
    import gluon_compile_worker as w
    import ws_gemm
    g1 = {"x_ptr": "*bf16", "w1_ptr": "*i32", "w1_sf_ptr": "*u8", "offsets_ptr": "*i32", "sorted_ptr": "*i32",
          "weights_ptr": "*fp32", "act_ptr": "*i16", "bias_ptr": "*fp32"}
    g2 = {"act_ptr": "*bf16", "w2_ptr": "*i32", "w2_sf_ptr": "*u8", "offsets_ptr": "*i32", "sorted_ptr": "*i32",
          "weights_ptr": "*fp32", "out_ptr": "*i16", "bias_ptr": "*fp32"}
    for bm, stages in ((128, 3), (256, 2)):
        c1 = dict(TOPK=8, BLOCK_M=bm, E_PAD=256, HAS_CLAMP=False, FAST_MATH=True, ACTIVATION=0, HAS_BIAS=False,
                  STAGES=stages, QUAD=True, PERSISTENT=False, N_FASTEST=True)
        c2 = dict(BLOCK_M=bm, E_PAD=256, HAS_BIAS=False, STAGES=stages, QUAD=True, PERSISTENT=False, N_FASTEST=True)
        for name, kern, ptrs, floats, const in (("gemm1", ws_gemm._gemm1_ws_kernel, g1, {"clamp", "alpha"}, c1),
                                                ("gemm2", ws_gemm._gemm2_ws_kernel, g2, set(), c2)):
            info = w.inspect(w.compile_gluon(kern, ptrs, floats, const, 4))
            print(f"{name} bm{bm} s{stages}: {info}")


class Problem:
    """One routed problem: buffer, plan, transformed weights (as benchmarks/sweep_gemm.py builds it)."""

    def __init__(self, e, k, h, i, t, idx=None, seed=0):
        w1, w1_sf = random_mxfp4_weights(e, 2 * i, h, seed=seed + 1)
        w2, w2_sf = random_mxfp4_weights(e, h, i, seed=seed + 2)
        self.l1, self.l2 = tmoe.transform_weights_for_mega_moe((w1, w1_sf), (w2, w2_sf))
        self.buf = tmoe.get_symm_buffer_for_mega_moe(None, e, t, k, h, i)
        if idx is None:
            idx, tw = make_routing(t, e, k, "uniform", seed=t)
        else:
            tw = torch.rand(idx.shape, device="cuda") + 0.5
        x = torch.randn(t, h, device="cuda").to(torch.bfloat16)
        tmoe.layer.fill_buffer(self.buf, x, idx, tw)
        mxfp8_to_bf16(self.buf.x[:t], self.buf.x_sf[:t], self.buf.x_dq)
        self.plan = build_routing(self.buf.topk_idx[:t], e, capacity_slots=t * k)
        self.t, self.k = t, k

    def gemm1_shipped(self, cfg):
        return lambda: grouped_gemm.gemm1_swiglu(self.buf.x_dq, self.l1[0], self.l1[1], self.plan,
                                                 self.buf.topk_weights, self.buf.act, topk=self.k, clamp=None,
                                                 fast_math=True, cfg=cfg, soft=False, quad=is_quad(self.l1))

    def gemm1_ws(self, bm, stages):
        import ws_gemm
        return lambda: ws_gemm.gemm1_swiglu_ws(self.buf.x_dq, self.l1[0], self.l1[1], self.plan,
                                               self.buf.topk_weights, self.buf.act, topk=self.k, clamp=None,
                                               fast_math=True, block_m=bm, stages=stages, quad=is_quad(self.l1))

    def gemm2_shipped(self, cfg):
        return lambda: grouped_gemm.gemm2(self.buf.act, self.l2[0], self.l2[1], self.plan, self.buf.slot_out,
                                          cfg=cfg, soft=False, quad=is_quad(self.l2))

    def gemm2_ws(self, bm, stages):
        import ws_gemm
        return lambda: ws_gemm.gemm2_ws(self.buf.act, self.l2[0], self.l2[1], self.plan, self.buf.slot_out,
                                        block_m=bm, stages=stages, quad=is_quad(self.l2))


def compare(p: Problem, bm: int, stages: int, timed: bool) -> list[dict]:
    rows = []
    g1 = GemmConfig(bm, 64, True, 8, 2, kernel="gluon")
    g2 = GemmConfig(bm, 128, True, 8, 2, kernel="gluon")
    slots = p.t * p.k
    p.buf.act.fill_(0)
    p.gemm1_shipped(g1)()
    ref_act = p.buf.act[:slots].clone()
    p.buf.act.fill_(0)
    p.gemm1_ws(bm, stages)()
    torch.cuda.synchronize()
    same1 = torch.equal(p.buf.act[:slots], ref_act)
    p.buf.act[:slots].copy_(ref_act)
    p.buf.slot_out.fill_(0)
    p.gemm2_shipped(g2)()
    ref_out = p.buf.slot_out[:slots].clone()
    p.buf.slot_out.fill_(0)
    p.gemm2_ws(bm, stages)()
    torch.cuda.synchronize()
    same2 = torch.equal(p.buf.slot_out[:slots], ref_out)
    row = dict(tokens=p.t, block_m=bm, stages=stages, gemm1_bitwise=same1, gemm2_bitwise=same2)
    if timed:
        row.update(gemm1_shipped_us=time_graph(p.gemm1_shipped(g1), reps=10),
                   gemm1_ws_us=time_graph(p.gemm1_ws(bm, stages), reps=10),
                   gemm2_shipped_us=time_graph(p.gemm2_shipped(g2), reps=10),
                   gemm2_ws_us=time_graph(p.gemm2_ws(bm, stages), reps=10))
    rows.append(row)
    print(row, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="dsv3,v4flash")
    ap.add_argument("--tokens", default="8192")
    ap.add_argument("--offline", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.offline:
        return offline()
    rows = []
    counts = [0, 5, 32, 33, 128, 129, 256, 257, 288, 300]          # around every tile boundary
    idx = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    idx = idx[torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(0))].unsqueeze(1).cuda()
    small = Problem(len(counts), 1, 512, 256, idx.shape[0], idx=idx)
    for bm, stages in ((128, 3), (256, 2)):
        rows += compare(small, bm, stages, timed=False)
    for name in args.workloads.split(","):
        wl = WORKLOADS[name]
        for t in (int(v) for v in args.tokens.split(",")):
            p = Problem(wl.num_experts, wl.topk, wl.hidden, wl.intermediate, t)
            for bm, stages in ((128, 3), (256, 2)):
                rows += [dict(workload=name, **r) for r in compare(p, bm, stages, timed=True)]
            p.buf.destroy()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
