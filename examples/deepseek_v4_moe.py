"""DeepSeek-V4 MoE layer, end to end: FP4 expert checkpoint in the true on-disk format -> tmoe -> check.

    python examples/deepseek_v4_moe.py [--tokens 16]

Writes a small synthetic DeepSeek-V4 checkpoint (`layers.{l}.ffn.experts.{e}.w1|w2|w3.weight`
int8-packed E2M1 [N, K/2] with `.scale` F8_E8M0 [N, K/32]; w1 = gate, w3 = up, w2 = down), loads one
layer with `tmoe.MegaMoE.from_checkpoint` (SwiGLU, swiglu_limit 10 -> activation_clamp=10), routes
the V4 way (sqrt(softplus(logits)) + bias for selection, weights from the unbiased scores,
renormalized, x route_scale 1.5), runs the layer and checks it against the float64 reference and a
plain float MoE.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import tmoe  # noqa: E402
from tmoe import checkpoints  # noqa: E402
from tmoe.reference import reference_moe_bf16  # noqa: E402
from tmoe.router import route  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--intermediate", type=int, default=64)
    args = ap.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        floats = checkpoints.write_synthetic_checkpoint(folder, "deepseek-v4", num_layers=1, num_experts=args.experts,
                                                        hidden=args.hidden, intermediate=args.intermediate, seed=0)[0]
        layer = tmoe.MegaMoE.from_checkpoint(folder, layer=0, device=dev)
        router_w, router_bias = checkpoints.load_router_weights(folder, 0)
    print(layer)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.tokens, args.hidden, generator=g).to(torch.bfloat16)
    logits = x.float() @ router_w.T
    idx, weights = route(logits.to(dev), layer.top_k, scoring="sqrtsoftplus", bias=router_bias.to(dev), scaling=1.5)
    y = layer(x.to(dev), idx, weights)

    buf, t = layer.buffer, args.tokens
    ref = tmoe.reference_moe(buf.x[:t], buf.x_sf[:t], idx, weights, layer.weights, activation_clamp=10.0)
    exact = tmoe.calc_diff(y, ref)
    plain = reference_moe_bf16(x, idx.cpu(), weights.cpu(), floats.w1, floats.w2, activation_clamp=10.0)
    loose = tmoe.calc_diff(y.cpu(), plain)
    ok = exact <= 1e-4 and loose <= 5e-2 and not torch.isnan(y).any()
    print(f"vs float64 reference (same MXFP8/MXFP4 numerics): calc_diff {exact:.2e} (limit 1e-4)")
    print(f"vs a plain float MoE on the same weights (no activation quantization): calc_diff {loose:.2e} (limit 5e-2)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
