"""Token rows in the routing plan's sorted order: rows[r] = x[sorted_slots[r] // K] for the plan's routed rows.

GEMM1 reads each tile's activation rows by token (a gather); a TMA box covers only consecutive rows, so GEMM1's
TMA-fed activation ring (GemmConfig.tma_b, kernels/wgmma_gemm.py) reads this copy instead, where an expert's rows
are consecutive. One extra pass: T * K rows written (dsv3 T = 8192: 0.94 GB), each token read K times.
Rows past the plan's routed count are not written.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["gather_rows", "gather_rows_reference"]


@triton.jit
def _gather_rows_kernel(x_ptr, stride_x, sorted_ptr, offsets_ptr, out_ptr, stride_out, num_local_experts, hidden,
                        TOPK: tl.constexpr, ROWS: tl.constexpr, BLOCK_H: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < tl.load(offsets_ptr + num_local_experts)
    token = (tl.load(sorted_ptr + rows, mask=row_ok, other=0) // TOPK).to(tl.int64)
    ok = row_ok[:, None] & (cols < hidden)[None, :]
    values = tl.load(x_ptr + token[:, None] * stride_x + cols[None, :], mask=ok)
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_out + cols[None, :], values, mask=ok)


def gather_rows(x_bits: torch.Tensor, plan, topk: int, out: torch.Tensor) -> torch.Tensor:
    """out[r] = x_bits[plan.sorted_slots[r] // topk] for r < plan.expert_offsets[-1] (int16 rows [T, H] -> [>= T*K,
    H]); returns out. ValueError for shapes that do not fit, before any launch."""
    if x_bits.dim() != 2 or out.dim() != 2 or out.shape[1] != x_bits.shape[1]:
        raise ValueError(f"gather_rows: x_bits {tuple(x_bits.shape)} and out {tuple(out.shape)} must be 2-D with the "
                         "same row length")
    if out.dtype != x_bits.dtype or out.stride(1) != 1 or x_bits.stride(1) != 1:
        raise ValueError(f"gather_rows: x_bits ({x_bits.dtype}) and out ({out.dtype}) must have one dtype and "
                         "contiguous rows")
    if out.shape[0] < plan.num_slots:
        raise ValueError(f"gather_rows: out has {out.shape[0]} rows, the plan routes up to {plan.num_slots}")
    if plan.num_slots == 0:
        return out
    hidden = x_bits.shape[1]
    rows, block_h = 16, min(1024, triton.next_power_of_2(hidden))
    grid = (triton.cdiv(plan.num_slots, rows), triton.cdiv(hidden, block_h))
    _gather_rows_kernel[grid](x_bits, x_bits.stride(0), plan.sorted_slots, plan.expert_offsets, out, out.stride(0),
                              plan.num_local_experts, hidden, TOPK=topk, ROWS=rows, BLOCK_H=block_h, num_warps=4)
    return out


def gather_rows_reference(x_bits: torch.Tensor, plan, topk: int, out: torch.Tensor) -> torch.Tensor:
    """gather_rows in torch (the oracle of its test)."""
    total = int(plan.expert_offsets[-1])
    out[:total] = x_bits[plan.sorted_slots[:total].long() // topk]
    return out
