"""Problem generators shared by the layer tests: weights, routing patterns, one full layer call."""
from __future__ import annotations

import torch

import tmoe
from tmoe.layer import fill_buffer
from tmoe.reference import MoEWeights

ROUTING_PATTERNS = ("uniform", "masked", "duplicates", "hot_expert", "few_experts", "all_masked")


def make_weights(num_experts: int, hidden: int, intermediate: int, seed: int, device, scale: float = 0.05) -> MoEWeights:
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(num_experts, 2 * intermediate, hidden, generator=g) * scale
    w2 = torch.randn(num_experts, hidden, intermediate, generator=g) * scale
    q = MoEWeights.quantize(w1, w2)
    return MoEWeights(*(t.to(device) for t in (q.w1, q.w1_sf, q.w2, q.w2_sf)))


def make_routing(num_tokens: int, num_experts: int, topk: int, pattern: str, seed: int, device):
    """topk_idx int64 [T, K] and topk_weights fp32 [T, K] following a named routing pattern."""
    g = torch.Generator().manual_seed(seed)
    t, e, k = num_tokens, num_experts, topk
    if pattern in ("uniform", "masked", "all_masked") and k <= e:
        idx = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)]) if t else torch.zeros(0, k, dtype=torch.long)
    elif pattern == "hot_expert":           # every token hits expert 0 (plus random others)
        idx = torch.randint(0, e, (t, k), generator=g)
        idx[:, 0] = 0
    elif pattern == "few_experts":          # only 2 experts used: most are empty
        idx = torch.randint(0, min(e, 2), (t, k), generator=g)
    else:                                   # duplicates allowed (also the fallback when K > E)
        idx = torch.randint(0, e, (t, k), generator=g)
    if pattern == "masked":
        idx[torch.rand(t, k, generator=g) < 0.3] = -1
    if pattern == "all_masked":
        idx[: (t + 1) // 2] = -1
    weights = torch.rand(t, k, generator=g) + 0.1
    return idx.to(device), weights.to(device)


def make_tokens(num_tokens: int, hidden: int, seed: int, device, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(num_tokens, hidden, generator=g) * scale).to(torch.bfloat16).to(device)


def run_layer(weights: MoEWeights, x, idx, topk_weights, *, capacity: int | None = None, clamp=None,
              stats=None, gemm1_config=None, gemm2_config=None, **kwargs):
    """Quantize + fill + run the Triton layer; returns (y, buffer). y is poisoned (NaN) first."""
    t, h = x.shape
    e = weights.num_experts
    buf = tmoe.get_symm_buffer_for_mega_moe(None, e, capacity or max(t, 1), idx.shape[1], h,
                                            weights.intermediate, device=x.device)
    l1, l2 = tmoe.transform_weights_for_mega_moe((weights.w1, weights.w1_sf), (weights.w2, weights.w2_sf))
    fill_buffer(buf, x, idx, topk_weights)
    y = torch.full((t, h), float("nan"), dtype=torch.bfloat16, device=x.device)
    tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, cumulative_local_expert_recv_stats=stats, activation_clamp=clamp,
                          gemm1_config=gemm1_config, gemm2_config=gemm2_config, **kwargs)
    return y, buf
