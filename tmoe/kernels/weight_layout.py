"""Byte order of the MXFP4 codes inside the Triton backend's transformed weights.

"canonical": DESIGN.md §2.2 (byte j of a row holds codes 2j, 2j+1).
"quad" (the default on Hopper: `layout="auto"` picks it when the weights live on an sm_90 GPU;
force either with `transform_weights_for_mega_moe(..., layout=...)` or TMOE_WEIGHT_LAYOUT): inside
every 64-byte block of a row (one 128-k GEMM step), the byte for logical position j = 16r + 4q + t
sits at 16t + 4r + q. Lane t of a wgmma A fragment (t = lane % 4) needs exactly bytes j = t (mod 4),
four per 32-k group r, so with this order its 16 loaded bytes are already its own, in decode order:
the Gluon kernel skips its quad exchange (54 of ~376 instructions per K step, benchmarks/NOTES.md).
The Triton kernels undo the permutation in registers.
Applied only to tensors whose K is a multiple of 128 (a partial last block stays canonical: the
whole tensor then does). Results are bitwise the same in either layout. Measured on H100
(benchmarks/NOTES.md "v4"): dsv3 T=128 -2%, T=512 -7%, qwen3 T=128 -10%, prefill unchanged.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LAYOUTS = ("auto", "canonical", "quad")
QUAD_BLOCK_BYTES = 64


def default_layout() -> str:
    layout = os.environ.get("TMOE_WEIGHT_LAYOUT", "auto")
    if layout not in LAYOUTS:
        raise ValueError(f"TMOE_WEIGHT_LAYOUT must be one of {LAYOUTS}, got {layout!r}")
    return layout


def resolve_layout(layout: str, device: torch.device) -> str:
    """"auto" -> "quad" for weights on an sm_90 GPU (the Gluon kernels gain from it), else
    "canonical" (CPU / interpreter, other GPUs: no Gluon kernel reads it there)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout != "auto":
        return layout
    hopper = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9
    return "quad" if hopper else "canonical"


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
