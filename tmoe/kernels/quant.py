"""Triton MXFP8 quantizer: `per_token_cast_to_fp8(x) -> (x_fp8, x_sf)` (DESIGN.md §2.1).

Bit-exact with `tmoe.formats.quantize_mxfp8` (and DeepGEMM's `per_token_cast_to_fp8(x,
use_ue8m0=True, gran_k=32, use_packed_ue8m0=True)`), including the non-finite behaviour described
in `tmoe.formats`. One pass over x: each program reads a [BLOCK_T, BLOCK_H] tile and writes its E4M3
bytes and scale bytes; the scale bytes land directly in the packed int32 words (byte j of word i is
block 4i + j, little-endian), and the program holding the last column tile writes the pad bytes
(127) of a partial word.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import formats
from . import pdl
from .numerics import dequant_fp8_tile, f32_to_bf16_bits, mxfp8_quantize_tile, soft_numerics

__all__ = ["per_token_cast_to_fp8", "mxfp8_to_bf16"]


@triton.jit
def _mxfp8_quant_kernel(x_ptr, q_ptr, sf_ptr, num_tokens, hidden, stride_x, stride_q, stride_sf,
                        BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, SOFT: tl.constexpr, PDL: tl.constexpr):
    pdl.enter(PDL)
    pid_t = tl.program_id(0)
    pid_h = tl.program_id(1)
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < num_tokens
    mask = row_ok[:, None] & (cols < hidden)[None, :]
    rows64 = rows.to(tl.int64)
    x = tl.load(x_ptr + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    codes, exps = mxfp8_quantize_tile(x, BLOCK_T, BLOCK_H, SOFT)
    tl.store(q_ptr + rows64[:, None] * stride_q + cols[None, :], codes, mask=mask)
    blocks = pid_h * (BLOCK_H // 32) + tl.arange(0, BLOCK_H // 32)
    num_blocks = hidden // 32
    tl.store(sf_ptr + rows64[:, None] * stride_sf + blocks[None, :], exps,
             mask=row_ok[:, None] & (blocks < num_blocks)[None, :])
    if pid_h == tl.num_programs(1) - 1:
        # Pad bytes of a partial last int32 word: blocks num_blocks .. 4*ceil(num_blocks/4) - 1.
        pad = num_blocks + tl.arange(0, 4)
        pad_ok = pad < ((num_blocks + 3) // 4) * 4
        tl.store(sf_ptr + rows64[:, None] * stride_sf + pad[None, :],
                 tl.full([BLOCK_T, 4], 127, tl.uint8), mask=row_ok[:, None] & pad_ok[None, :])


def _validate(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [num_tokens, hidden], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"x must be bf16, fp16 or fp32, got {x.dtype}")
    formats.check_hidden("hidden (x.shape[1])", x.shape[1])
    if x.stride(1) != 1:
        raise ValueError(f"x must have a contiguous last dimension, got strides {x.stride()}")


def per_token_cast_to_fp8(x: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor] | None = None,
                          block_t: int | None = None, block_h: int | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """MXFP8-quantize x [T, H] -> (x_fp8 float8_e4m3fn [T, H], x_sf int32 [T, ceil(H/128)]).

    `out` may give preallocated (x_fp8, x_sf) (e.g. the symmetric buffer's views) to write into. On Hopper the
    kernel is a programmatic dependent launch unless TMOE_PDL=0|gemm2 (tmoe.kernels.pdl; same results).
    """
    _validate(x)
    chain = pdl.chain_on(x.device, x.shape[0])
    t, h = x.shape
    words = formats.packed_scale_words(h)
    if out is None:
        q = torch.empty((t, h), dtype=torch.float8_e4m3fn, device=x.device)
        sf = torch.empty((t, words), dtype=torch.int32, device=x.device)
    else:
        q, sf = out
        if q.dtype != torch.float8_e4m3fn or tuple(q.shape[-1:]) != (h,) or q.shape[0] < t:
            raise ValueError(f"out x_fp8 must be float8_e4m3fn [>={t}, {h}], got {q.dtype} {tuple(q.shape)}")
        if sf.dtype != torch.int32 or sf.shape[-1] != words or sf.shape[0] < t:
            raise ValueError(f"out x_sf must be int32 [>={t}, {words}], got {sf.dtype} {tuple(sf.shape)}")
        q, sf = q[:t], sf[:t]
    if t == 0:
        return q, sf
    soft = soft_numerics(x)
    block_h = block_h or min(1024 if not soft else 256, triton.next_power_of_2(h))
    block_t = block_t or (max(1, 4096 // block_h) if not soft else 4)
    grid = (triton.cdiv(t, block_t), triton.cdiv(h, block_h))
    _mxfp8_quant_kernel[grid](x, q.view(torch.uint8), sf.view(torch.uint8), t, h,
                              x.stride(0), q.stride(0), sf.stride(0) * 4,
                              BLOCK_T=block_t, BLOCK_H=block_h, SOFT=soft, PDL=chain,
                              num_warps=4 if not soft else 1, **pdl.launch_options(chain))
    return q, sf


@triton.jit
def _mxfp8_to_bf16_kernel(q_ptr, sf_ptr, out_ptr, num_tokens, hidden, stride_q, stride_sf, stride_out,
                          BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, SOFT: tl.constexpr, PDL: tl.constexpr):
    pdl.enter(PDL)
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    blocks = tl.program_id(1) * (BLOCK_H // 32) + tl.arange(0, BLOCK_H // 32)
    row_ok = rows < num_tokens
    rows64 = rows.to(tl.int64)
    mask = row_ok[:, None] & (cols < hidden)[None, :]
    q = tl.load(q_ptr + rows64[:, None] * stride_q + cols[None, :], mask=mask, other=0)
    s = tl.load(sf_ptr + rows64[:, None] * stride_sf + blocks[None, :],
                mask=row_ok[:, None] & (blocks < hidden // 32)[None, :], other=127)
    vals = dequant_fp8_tile(q, s, BLOCK_T, BLOCK_H, SOFT)
    tl.store(out_ptr + rows64[:, None] * stride_out + cols[None, :], f32_to_bf16_bits(vals, SOFT), mask=mask)


def mxfp8_to_bf16(x_fp8: torch.Tensor, x_sf: torch.Tensor, out_bits: torch.Tensor, pdl_launch: bool = False
                  ) -> torch.Tensor:
    """Exact dequantization of MXFP8 rows into bf16 bits: x_fp8 [T, H], x_sf int32 [T, ceil(H/128)]
    -> out_bits int16 [>= T, H] (every MXFP8 value is exactly a bf16 value for scales >= 2^-124).
    `pdl_launch`: a programmatic dependent launch (tmoe.kernels.pdl; sm_90+)."""
    t, h = x_fp8.shape
    if t == 0:
        return out_bits
    soft = soft_numerics(x_fp8)
    block_h = min(1024 if not soft else 256, triton.next_power_of_2(h))
    block_t = max(1, 4096 // block_h) if not soft else 4
    _mxfp8_to_bf16_kernel[(triton.cdiv(t, block_t), triton.cdiv(h, block_h))](
        x_fp8.view(torch.uint8), x_sf.view(torch.uint8), out_bits, t, h, x_fp8.stride(0), x_sf.stride(0) * 4,
        out_bits.stride(0), BLOCK_T=block_t, BLOCK_H=block_h, SOFT=soft, PDL=pdl_launch,
        num_warps=4 if not soft else 1, **pdl.launch_options(pdl_launch))
    return out_bits
