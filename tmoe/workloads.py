"""The benchmark workloads of DESIGN.md §6, and random problem generators for benchmarks, the
autotuner, the cross-check and the demo (random valid MXFP4 weights, realistic routing)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Workload", "WORKLOADS", "TOKENS", "random_mxfp4_weights", "make_routing"]


@dataclass(frozen=True)
class Workload:
    name: str
    num_experts: int
    topk: int
    hidden: int
    intermediate: int
    clamp: float | None = None


WORKLOADS = {
    "dsv3": Workload("dsv3", 256, 8, 7168, 2048),
    "v4flash": Workload("v4flash", 256, 6, 4096, 2048, 10.0),
    "gptoss": Workload("gptoss", 128, 4, 2880, 2880),
    "qwen3": Workload("qwen3", 128, 8, 2048, 768),
}
TOKENS = (1, 8, 32, 128, 512, 2048, 8192)


def random_mxfp4_weights(num_experts: int, rows: int, cols: int, device="cuda", seed: int = 0,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random valid canonical MXFP4: codes int8 [E, rows, cols/2] (any byte), scales uint8
    [E, rows, cols/32] in 2^-9..2^-4 (weights of realistic magnitude)."""
    g = generator if generator is not None else torch.Generator(device=device).manual_seed(seed)
    codes = torch.randint(-128, 128, (num_experts, rows, cols // 2), dtype=torch.int8, device=device, generator=g)
    scales = torch.randint(118, 124, (num_experts, rows, cols // 32), dtype=torch.uint8, device=device, generator=g)
    return codes, scales


def make_routing(num_tokens: int, num_experts: int, topk: int, kind: str = "uniform", seed: int = 0,
                 device="cuda") -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct top-k experts per token: 'uniform' random, or 'zipf' (expert popularity ~ 1/rank^1.2);
    weights uniform in [0, 1/topk)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    if kind == "uniform":
        probs = torch.ones(num_experts)
    elif kind == "zipf":
        probs = 1.0 / torch.arange(1, num_experts + 1, dtype=torch.float64) ** 1.2
        probs = probs[torch.randperm(num_experts, generator=g)]
    else:
        raise ValueError(f"routing kind must be 'uniform' or 'zipf', got {kind!r}")
    if num_tokens == 0:
        return (torch.zeros(0, topk, dtype=torch.int64, device=device),
                torch.zeros(0, topk, dtype=torch.float32, device=device))
    idx = torch.multinomial(probs.float().expand(num_tokens, num_experts), topk, replacement=False, generator=g)
    weights = torch.rand(num_tokens, topk, generator=g) / topk
    return idx.to(device), weights.to(device)
