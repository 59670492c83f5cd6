"""gpt-oss MoE layer, end to end: checkpoint in the true on-disk MXFP4 format -> tmoe -> check.

    python examples/gpt_oss_moe.py [--tokens 16]

Writes a small synthetic gpt-oss checkpoint (HF naming: `*_blocks` uint8 [E, N, K/32, 16],
`*_scales` E8M0, biases, gate/up rows interleaved), loads one layer with
`tmoe.MegaMoE.from_checkpoint` (de-interleaved to [gate | up], activation swiglu_oai, clamp 7),
routes real-looking logits the gpt-oss way (top-k of `x @ W.T + b`, softmax over the k), runs the
layer and compares it with the float64 reference and with gpt-oss's own float formula.
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
from tmoe.router import route  # noqa: E402


def gpt_oss_float_moe(x, idx, weights, floats, limit=7.0, alpha=1.702):
    """gpt-oss's MLPBlock on float weights: (W2 swiglu(W1 x + b1) + b2) weighted by the router."""
    y = torch.zeros(x.shape, dtype=torch.float64)
    i = floats.w1.shape[1] // 2
    for t in range(x.shape[0]):
        for k in range(idx.shape[1]):
            e = int(idx[t, k])
            h = floats.w1[e].double() @ x[t].double() + floats.b1[e].double()
            g, u = h[:i].clamp(max=limit), h[i:].clamp(-limit, limit)
            act = g * torch.sigmoid(alpha * g) * (u + 1)
            y[t] += float(weights[t, k]) * (floats.w2[e].double() @ act + floats.b2[e].double())
    return y


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--intermediate", type=int, default=96)
    args = ap.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        floats = checkpoints.write_synthetic_checkpoint(folder, "gpt-oss", num_layers=2, num_experts=args.experts,
                                                        hidden=args.hidden, intermediate=args.intermediate, seed=0)[1]
        layer = tmoe.MegaMoE.from_checkpoint(folder, layer=1, device=dev)
        router_w, router_b = checkpoints.load_router_weights(folder, 1)
    print(layer)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.tokens, args.hidden, generator=g).to(torch.bfloat16)
    logits = x.float() @ router_w.T + router_b
    idx, weights = route(logits.to(dev), layer.top_k, scoring="topk_softmax")
    y = layer(x.to(dev), idx, weights)

    buf, t = layer.buffer, args.tokens
    ref = tmoe.reference_moe(buf.x[:t], buf.x_sf[:t], idx, weights, layer.weights, activation="swiglu_oai",
                             activation_clamp=7.0, b1=layer.b1, b2=layer.b2)
    exact = tmoe.calc_diff(y, ref)
    loose = tmoe.calc_diff(y.cpu(), gpt_oss_float_moe(x, idx.cpu(), weights.cpu(), floats))
    ok = exact <= 1e-4 and loose <= 5e-2 and not torch.isnan(y).any()
    print(f"vs float64 reference (same MXFP8/MXFP4 numerics): calc_diff {exact:.2e} (limit 1e-4)")
    print(f"vs gpt-oss's float formula (no activation quantization): calc_diff {loose:.2e} (limit 5e-2)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
