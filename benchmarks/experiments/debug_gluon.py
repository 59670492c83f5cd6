"""GPU debug: Gluon vs Triton GEMMs over K lengths (NaN / mismatch counts per config).

    PYTHONPATH=. python benchmarks/experiments/debug_gluon.py

Found the async-wgmma register-reuse bug (wrong only once K >= 2048; benchmarks/NOTES.md, v3).
"""
import torch
import tmoe
from tmoe.kernels import grouped_gemm
from tmoe.kernels.configs import GemmConfig
from tmoe.kernels.quant import mxfp8_to_bf16
from tmoe.kernels.routing import build_routing
from tmoe.layer import fill_buffer
from tmoe.kernels.weight_layout import is_quad
import sys
sys.path.insert(0, "tests")
from moe_cases import make_routing, make_tokens, make_weights

dev = torch.device("cuda")
tri = GemmConfig(16, 64, True, 4, 3)
for (h, i) in [(256, 128), (512, 128), (1024, 128), (2048, 256), (7168, 256), (256, 1024), (256, 2048)]:
    e, k, t = 4, 2, 5
    wts = make_weights(e, h, i, seed=1, device=dev)
    l1, l2 = tmoe.transform_weights_for_mega_moe((wts.w1, wts.w1_sf), (wts.w2, wts.w2_sf))
    x = make_tokens(t, h, seed=2, device=dev)
    idx, w = make_routing(t, e, k, "uniform", seed=3, device=dev)
    buf = tmoe.get_symm_buffer_for_mega_moe(None, e, t, k, h, i, device=dev)
    fill_buffer(buf, x, idx, w)
    mxfp8_to_bf16(buf.x[:t], buf.x_sf[:t], buf.x_dq)
    plan = build_routing(buf.topk_idx[:t], e, capacity_slots=t * k)
    res = {}
    for name, c1, c2 in [("tri", tri, tri), ("g_s2", GemmConfig(8, 32, True, 4, 2, kernel="gluon"), GemmConfig(8, 64, True, 4, 2, kernel="gluon")),
                         ("g_s3", GemmConfig(8, 32, True, 4, 3, kernel="gluon"), GemmConfig(8, 64, True, 4, 3, kernel="gluon"))]:
        buf.act.fill_(0)
        grouped_gemm.gemm1_swiglu(buf.x_dq, l1[0], l1[1], plan, buf.topk_weights, buf.act, topk=k, clamp=None,
                                  fast_math=True, cfg=c1, soft=False, quad=is_quad(l1))
        a = buf.act[: t * k].clone()
        # GEMM2 always from the Triton act
        if name != "tri":
            buf.act[: t * k] = res["tri"][0]
        buf.slot_out.fill_(0)
        grouped_gemm.gemm2(buf.act, l2[0], l2[1], plan, buf.slot_out, cfg=c2, soft=False, quad=is_quad(l2))
        o = buf.slot_out[: t * k].clone()
        res[name] = (a, o)
    torch.cuda.synchronize()
    for name in ("g_s2", "g_s3"):
        a, o = res[name]
        af = a.view(torch.bfloat16).float(); of = o.view(torch.bfloat16).float()
        ra = res["tri"][0].view(torch.bfloat16).float(); ro = res["tri"][1].view(torch.bfloat16).float()
        bad_a = (a != res["tri"][0])
        bad_o = (o != res["tri"][1])
        print(f"H={h} I={i} {name}: gemm1 nan={int(af.isnan().sum())} mism={int(bad_a.sum())}/{a.numel()} "
              f"first={bad_a.nonzero()[:3].tolist()} | gemm2 nan={int(of.isnan().sum())} mism={int(bad_o.sum())}/{o.numel()} "
              f"first={bad_o.nonzero()[:3].tolist()} maxdiff1={float((af-ra).abs().nan_to_num(9e9).max()):.3g}", flush=True)
