"""Session 17: gpt-oss GEMM1 / GEMM2 alone (the cache's picks, CUDA graph, L2 flushed) in the tree on PYTHONPATH, one
line per (T, GEMM): where the partial K step's codes come from (run2.sh times several trees in turn)."""
import sys

import torch

import tmoe
from tmoe.autotune.timing import time_graph
from tmoe.kernels import grouped_gemm
from tmoe.kernels.configs import select_config
from tmoe.kernels.quant import mxfp8_to_bf16
from tmoe.kernels.routing import build_routing
from tmoe.kernels.weight_layout import is_quad, is_tiled
from tmoe.workloads import WORKLOADS, make_routing, random_mxfp4_weights

label = sys.argv[1]
wl = WORKLOADS["gptoss"]
e, k, h, i = wl.num_experts, wl.topk, wl.hidden, wl.intermediate
l1, l2 = tmoe.transform_weights_for_mega_moe(random_mxfp4_weights(e, 2 * i, h, seed=1),
                                             random_mxfp4_weights(e, h, i, seed=2))
dev = torch.cuda.get_device_name()
for t in (1, 8, 128):
    buf = tmoe.get_symm_buffer_for_mega_moe(None, e, t, k, h, i)
    idx, tw = make_routing(t, e, k, "uniform", seed=t)
    tmoe.layer.fill_buffer(buf, torch.randn(t, h, device="cuda").to(torch.bfloat16), idx, tw)
    mxfp8_to_bf16(buf.x[:t], buf.x_sf[:t], buf.x_dq)
    plan = build_routing(buf.topk_idx[:t], e, capacity_slots=t * k)
    pick = {kern: select_config(kern, t * k, e, False, num_experts=e, hidden=h, intermediate=i, topk=k, hopper=True,
                                device_name=dev) for kern in ("gemm1", "gemm2")}

    def g1():
        grouped_gemm.gemm1_swiglu(buf.x_dq, l1[0], l1[1], plan, buf.topk_weights, buf.act, topk=k, clamp=wl.clamp,
                                  fast_math=True, cfg=pick["gemm1"], soft=False, quad=is_quad(l1), tiled=is_tiled(l1))

    def g2():
        grouped_gemm.gemm2(buf.act, l2[0], l2[1], plan, buf.slot_out, cfg=pick["gemm2"], soft=False, quad=is_quad(l2),
                           tiled=is_tiled(l2))
    g1()
    g2()
    torch.cuda.synchronize()
    s1 = int(buf.act[: t * k].float().abs().sum().item() * 1000) % 100003
    s2 = int(buf.slot_out[: t * k].float().abs().sum().item() * 1000) % 100003
    print(f"{label:6} T={t:4} GEMM1 {time_graph(g1, reps=50):8.1f} us  GEMM2 {time_graph(g2, reps=50):8.1f} us  "
          f"checksums {s1} {s2}  prefetch {pick['gemm1'].prefetch}/{pick['gemm2'].prefetch}", flush=True)
    buf.destroy()
