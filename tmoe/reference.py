"""The oracle: DESIGN.md §1.1 in torch with float64 sums. Every kernel is tested against this.

Numerics, per (token t, slot k) with e = topk_idx[t, k] >= 0:

    h   = bf16( sum_H f64( dq(xq, sx) * dq(W1[e]) ) )          # [2I] = [gate | up]
    g,u = h[:I], h[I:]           (clamp c: g = min(g, c), u = clamp(u, -c, c); fp32)
    s   = g / (1 + exp(-g)) * u * topk_weights[t, k]             # fp32, left to right
    sq, ss = mxfp8(s)                                             # formats.quantize_mxfp8
    o_k = bf16( sum_I f64( dq(sq, ss) * dq(W2[e]) ) )             # [H]
    y[t] = bf16( fp32 sum over valid k, ascending )               # all-masked -> 0

Runs on CPU or GPU (float64 matmuls); weights are dequantized one expert at a time, so it also
serves realistic shapes on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import formats

__all__ = ["MoEWeights", "reference_moe", "reference_moe_ep", "reference_moe_bf16", "calc_diff",
           "swiglu_fp32", "ACTIVATIONS"]


@dataclass(frozen=True)
class MoEWeights:
    """Canonical MXFP4 weights of a set of experts (DESIGN.md §2.2).

    w1 int8 [E, 2I, H/2] (rows [gate | up]), w1_sf uint8 [E, 2I, H/32],
    w2 int8 [E, H, I/2], w2_sf uint8 [E, H, I/32].
    """
    w1: torch.Tensor
    w1_sf: torch.Tensor
    w2: torch.Tensor
    w2_sf: torch.Tensor

    @property
    def num_experts(self) -> int:
        return self.w1.shape[0]

    @property
    def hidden(self) -> int:
        return self.w1.shape[2] * 2

    @property
    def intermediate(self) -> int:
        return self.w1.shape[1] // 2

    def local(self, rank: int, num_ranks: int) -> "MoEWeights":
        """The experts that live on `rank` when E experts are split evenly over `num_ranks`."""
        e = self.num_experts
        if e % num_ranks:
            raise ValueError(f"num_experts={e} is not divisible by num_ranks={num_ranks}")
        n = e // num_ranks
        sl = slice(rank * n, (rank + 1) * n)
        return MoEWeights(self.w1[sl], self.w1_sf[sl], self.w2[sl], self.w2_sf[sl])

    @staticmethod
    def quantize(w1: torch.Tensor, w2: torch.Tensor, rounding: str = "toward_zero") -> "MoEWeights":
        """From float weights w1 [E, 2I, H] and w2 [E, H, I]."""
        a, a_sf = formats.quantize_mxfp4(w1, rounding)
        b, b_sf = formats.quantize_mxfp4(w2, rounding)
        return MoEWeights(a, a_sf, b, b_sf)


def calc_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """DeepGEMM's similarity metric 1 - 2*sum(ab)/sum(a^2 + b^2), in float64 (0 = identical)."""
    a, b = a.double(), b.double()
    denom = (a * a + b * b).sum()
    if denom == 0:
        return 0.0
    return float(1 - 2 * (a * b).sum() / denom)


ACTIVATIONS = ("swiglu", "swiglu_oai")
OAI_ALPHA = 1.702


def swiglu_fp32(h: torch.Tensor, weight: torch.Tensor, clamp: float | None, activation: str = "swiglu",
                alpha: float = OAI_ALPHA) -> torch.Tensor:
    """Activation of bf16 GEMM1 rows h [n, 2I] ([gate | up]) times the per-row routing weight [n]: fp32.

    clamp c (None = off): g = min(g, c), u = clamp(u, -c, c), on the bf16 values, in fp32.
    swiglu:     s = g / (1 + exp(-g)) * u * w
    swiglu_oai: s = g / (1 + exp(-alpha * g)) * (u + 1) * w        (gpt-oss; alpha = 1.702, c = 7)
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    i = h.shape[-1] // 2
    g = h[:, :i].float()
    u = h[:, i:].float()
    if clamp is not None:
        g = torch.clamp(g, max=clamp)
        u = torch.clamp(u, min=-clamp, max=clamp)
    if activation == "swiglu":
        return g / (1 + torch.exp(-g)) * u * weight.float().unsqueeze(-1)
    return g / (1 + torch.exp(-(torch.tensor(alpha, dtype=torch.float32) * g))) * (u + 1) * weight.float().unsqueeze(-1)


def _check_inputs(x_fp8, x_sf, topk_idx, topk_weights, weights: MoEWeights, num_experts: int):
    if x_fp8.dim() != 2 or x_fp8.dtype != torch.float8_e4m3fn:
        raise ValueError(f"x_fp8 must be float8_e4m3fn [T, H], got {x_fp8.dtype} {tuple(x_fp8.shape)}")
    t, h = x_fp8.shape
    if h != weights.hidden:
        raise ValueError(f"hidden mismatch: x has {h}, w1 has {weights.hidden}")
    if tuple(x_sf.shape) != (t, formats.packed_scale_words(h)) or x_sf.dtype != torch.int32:
        raise ValueError(f"x_sf must be int32 [{t}, {formats.packed_scale_words(h)}], got {x_sf.dtype} {tuple(x_sf.shape)}")
    if topk_idx.dim() != 2 or topk_idx.shape[0] != t:
        raise ValueError(f"topk_idx must be [{t}, K], got {tuple(topk_idx.shape)}")
    if topk_weights.shape != topk_idx.shape:
        raise ValueError(f"topk_weights shape {tuple(topk_weights.shape)} != topk_idx shape {tuple(topk_idx.shape)}")
    if t and (int(topk_idx.min()) < -1 or int(topk_idx.max()) >= num_experts):
        raise ValueError(f"topk_idx values must be in [-1, {num_experts}), got [{int(topk_idx.min())}, {int(topk_idx.max())}]")


def reference_moe(x_fp8: torch.Tensor, x_sf: torch.Tensor, topk_idx: torch.Tensor,
                  topk_weights: torch.Tensor, weights: MoEWeights, *,
                  activation_clamp: float | None = None, expert_offset: int = 0,
                  num_experts: int | None = None, return_slots: bool = False,
                  activation: str = "swiglu", activation_alpha: float = OAI_ALPHA,
                  b1: torch.Tensor | None = None, b2: torch.Tensor | None = None):
    """The layer for one rank holding every expert of `weights` (global ids expert_offset + j).

    Slots whose expert is outside [expert_offset, expert_offset + E_w) or -1 are skipped, so with
    the full weight set this is the whole MoE. `num_experts` is the global expert count ids are
    validated against (default expert_offset + E_w). Optional biases (gpt-oss) of the same experts:
    b1 [E_w, 2I] is added to the fp32 GEMM1 sum before its bf16 rounding; b2 [E_w, H] is scaled by
    the slot's routing weight (fp32) and added to the GEMM2 sum before its bf16 rounding, i.e.
    o_k = bf16(W2 (s) + w_k * b2), matching gpt-oss's (W2 act + b2) * w_k with the weight folded
    into s as in DESIGN.md §1.1. Returns y bf16 [T, H]; with return_slots=True also
    o bf16 [T, K, H] (per-slot GEMM2 outputs, zeros for skipped slots) and h bf16 [T, K, 2I].
    """
    e_w = weights.num_experts
    _check_inputs(x_fp8, x_sf, topk_idx, topk_weights, weights,
                  num_experts if num_experts is not None else expert_offset + e_w)
    t, hid = x_fp8.shape
    k = topk_idx.shape[1]
    inter = weights.intermediate
    dev = x_fp8.device
    xd = formats.dequantize_mxfp8(x_fp8, x_sf).double()
    o = torch.zeros(t, k, hid, dtype=torch.bfloat16, device=dev)
    hs = torch.zeros(t, k, 2 * inter, dtype=torch.bfloat16, device=dev)
    local = topk_idx - expert_offset
    valid = (topk_idx >= 0) & (local >= 0) & (local < e_w)
    for e in torch.unique(local[valid]).tolist():
        tok, slot = torch.nonzero(valid & (local == e), as_tuple=True)
        w1d = formats.dequantize_mxfp4(weights.w1[e], weights.w1_sf[e]).double()
        acc1 = xd[tok] @ w1d.T
        if b1 is not None:
            acc1 = acc1 + b1[e].double()
        h = acc1.to(torch.bfloat16)
        del w1d
        rw = topk_weights[tok, slot]
        s = swiglu_fp32(h, rw, activation_clamp, activation, activation_alpha)
        sq, ss = formats.quantize_mxfp8(s)
        sd = formats.dequantize_mxfp8(sq, ss).double()
        w2d = formats.dequantize_mxfp4(weights.w2[e], weights.w2_sf[e]).double()
        acc2 = sd @ w2d.T
        if b2 is not None:
            acc2 = acc2 + (rw.float().unsqueeze(-1) * b2[e].float()).double()
        o[tok, slot] = acc2.to(torch.bfloat16)
        hs[tok, slot] = h
    acc = torch.zeros(t, hid, dtype=torch.float32, device=dev)
    for j in range(k):
        acc = torch.where(valid[:, j:j + 1], acc + o[:, j].float(), acc)
    y = acc.to(torch.bfloat16)
    return (y, o, hs) if return_slots else y


def reference_moe_ep(xs_fp8, xs_sf, topk_idxs, topk_weights_list, weights: MoEWeights,
                     num_ranks: int, *, activation_clamp: float | None = None) -> list[torch.Tensor]:
    """R simulated ranks: per-rank token inputs, `weights` holding all E global experts.

    Each rank's tokens are routed to the experts of every rank (expert e on rank e // (E/R)); the
    per-rank partial results are summed in slot order exactly as one rank would, so the outputs
    equal `reference_moe` on each rank's tokens with all experts (EP invariance).
    """
    e = weights.num_experts
    if e % num_ranks:
        raise ValueError(f"num_experts={e} is not divisible by num_ranks={num_ranks}")
    e_local = e // num_ranks
    outs = []
    for x_fp8, x_sf, idx, w in zip(xs_fp8, xs_sf, topk_idxs, topk_weights_list):
        t, hid = x_fp8.shape
        o = torch.zeros(t, idx.shape[1], hid, dtype=torch.bfloat16, device=x_fp8.device)
        for r in range(num_ranks):
            _, o_r, _ = reference_moe(x_fp8, x_sf, idx, w, weights.local(r, num_ranks),
                                      activation_clamp=activation_clamp, expert_offset=r * e_local,
                                      num_experts=e, return_slots=True)
            owned = (idx >= r * e_local) & (idx < (r + 1) * e_local)
            o = torch.where(owned.unsqueeze(-1), o_r, o)    # each slot is owned by one rank
        acc = torch.zeros(t, hid, dtype=torch.float32, device=x_fp8.device)
        for j in range(idx.shape[1]):
            acc = torch.where((idx[:, j:j + 1] >= 0), acc + o[:, j].float(), acc)
        outs.append(acc.to(torch.bfloat16))
    return outs


def reference_moe_bf16(x: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor,
                       w1: torch.Tensor, w2: torch.Tensor, *, activation_clamp: float | None = None) -> torch.Tensor:
    """A plain unquantized MoE in float64 (no MXFP rounding anywhere): for loose sanity checks."""
    t, hid = x.shape
    inter = w1.shape[1] // 2
    y = torch.zeros(t, hid, dtype=torch.float64, device=x.device)
    for tok in range(t):
        for j in range(topk_idx.shape[1]):
            e = int(topk_idx[tok, j])
            if e < 0:
                continue
            h = w1[e].double() @ x[tok].double()
            g, u = h[:inter], h[inter:]
            if activation_clamp is not None:
                g = g.clamp(max=activation_clamp)
                u = u.clamp(-activation_clamp, activation_clamp)
            s = g * torch.sigmoid(g) * u * float(topk_weights[tok, j])
            y[tok] += w2[e].double() @ s
    return y
