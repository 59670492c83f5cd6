"""Byte order of the MXFP4 codes inside the Triton backend's transformed weights.

"canonical": DESIGN.md §2.2 (byte j of a row holds codes 2j, 2j+1).
"quad" (experimental, opt-in: `transform_weights_for_mega_moe(..., layout="quad")` or
TMOE_WEIGHT_LAYOUT=quad): inside every 64-byte block of a row (one 128-k GEMM step), the byte for
logical position j = 16r + 4q + t sits at 16t + 4r + q. Lane t of a wgmma A fragment (t = lane % 4)
needs exactly bytes j = t (mod 4), four per 32-k group r, so with this order its 16 loaded bytes
are already its own, in decode order: the Gluon kernel skips its quad exchange (54 of ~376
instructions per K step, benchmarks/NOTES.md). The Triton kernels undo the permutation in registers.
Applied only to tensors whose K is a multiple of 128 (a partial last block stays canonical: the
whole tensor then does). Results are bitwise the same in either layout.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LAYOUTS = ("canonical", "quad")
QUAD_BLOCK_BYTES = 64


def default_layout() -> str:
    layout = os.environ.get("TMOE_WEIGHT_LAYOUT", "canonical")
    if layout not in LAYOUTS:
        raise ValueError(f"TMOE_WEIGHT_LAYOUT must be one of {LAYOUTS}, got {layout!r}")
    return layout


def is_quad(weights) -> bool:
    """Whether transformed weights (a TransformedWeights pair) hold their codes in the quad order;
    pass it as `quad=` to the grouped-GEMM launchers."""
    return getattr(weights, "code_order", "canonical") == "quad"


def can_quad(codes: torch.Tensor) -> bool:
    """The quad order needs whole 64-byte blocks (K % 128 == 0)."""
    return codes.shape[-1] % QUAD_BLOCK_BYTES == 0


def to_quad(codes: torch.Tensor) -> torch.Tensor:
    """Canonical codes [..., K/2] -> quad order (a new contiguous tensor)."""
    if not can_quad(codes):
        raise ValueError(f"quad layout needs K/2 % {QUAD_BLOCK_BYTES} == 0, got codes shape {tuple(codes.shape)}")
    lead, half_k = codes.shape[:-1], codes.shape[-1]
    blocks = codes.reshape(*lead, half_k // QUAD_BLOCK_BYTES, 4, 4, 4)          # logical (r, q, t)
    return blocks.permute(*range(len(lead) + 1), -1, -3, -2).reshape(codes.shape).contiguous()   # (t, r, q)


def from_quad(codes: torch.Tensor) -> torch.Tensor:
    """Quad order -> canonical (the inverse of `to_quad`)."""
    lead, half_k = codes.shape[:-1], codes.shape[-1]
    blocks = codes.reshape(*lead, half_k // QUAD_BLOCK_BYTES, 4, 4, 4)          # physical (t, r, q)
    return blocks.permute(*range(len(lead) + 1), -2, -1, -3).reshape(codes.shape).contiguous()   # (r, q, t)


@triton.jit
def quad_to_canonical_tile(c, ROWS: tl.constexpr):
    """One K step's code tile [ROWS, 64] as loaded from quad-ordered weights -> canonical byte order."""
    return tl.reshape(tl.permute(tl.reshape(c, [ROWS, 4, 4, 4]), (0, 2, 3, 1)), [ROWS, 64])
