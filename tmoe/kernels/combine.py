"""Combine: y[t] = bf16( fp32 sum over valid slots k = 0..K-1, in ascending order, of o[t*K + k] ).

Masked slots (topk_idx == -1) are skipped without being read; an all-masked token gets zeros. The
fixed slot order makes the result independent of where (which rank, which tile) each slot ran.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import pdl
from .numerics import bf16_bits_to_f32, f32_to_bf16_bits

__all__ = ["combine"]


@triton.jit
def _combine_kernel(o_ptr, idx_ptr, y_ptr, hidden, stride_o, stride_y,
                    TOPK: tl.constexpr, BLOCK_H: tl.constexpr, SOFT: tl.constexpr, PDL: tl.constexpr):
    pdl.enter(PDL, TRIGGER=False)    # the call's last kernel: what follows waits for its completion
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ok = cols < hidden
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for k in tl.static_range(TOPK):
        valid = tl.broadcast_to(tl.load(idx_ptr + t * TOPK + k) >= 0, [BLOCK_H])
        v = bf16_bits_to_f32(tl.load(o_ptr + (t * TOPK + k) * stride_o + cols, mask=ok & valid, other=0))
        acc = tl.where(valid, acc + v, acc)
    tl.store(y_ptr + t * stride_y + cols, f32_to_bf16_bits(acc, SOFT), mask=ok)


def combine(o_bits: torch.Tensor, topk_idx: torch.Tensor, y: torch.Tensor, pdl_launch: bool = False) -> None:
    """o_bits int16 [>= T*K, H] (bf16 bits, row = slot), topk_idx [T, K] -> y bf16 [T, H] in place.
    `pdl_launch`: a programmatic dependent launch (tmoe.kernels.pdl; sm_90+)."""
    t, k = topk_idx.shape
    if t == 0:
        return
    hidden = y.shape[1]
    soft = not y.is_cuda
    block_h = min(triton.next_power_of_2(hidden), 256 if soft else 1024)
    _combine_kernel[(t, triton.cdiv(hidden, block_h))](
        o_bits, topk_idx, y.view(torch.int16), hidden, o_bits.stride(0), y.stride(0),
        TOPK=k, BLOCK_H=block_h, SOFT=soft, PDL=pdl_launch, num_warps=4 if not soft else 1,
        **pdl.launch_options(pdl_launch))
