"""Grouped MXFP8 x MXFP4 GEMMs over expert-sorted slots (DESIGN.md §1.1), Hopper-friendly.

GEMM1 (`gemm1_swiglu`): for the rows of each local expert, gather the token's MXFP8 row, multiply
by that expert's gate and up rows of w1, and in the epilogue round h to bf16, clamp, SwiGLU, scale by
the routing weight and requantize to MXFP8 (E4M3 bytes + one UE8M0 byte per 32 channels of I).
GEMM2 (`gemm2`): the MXFP8 intermediate times w2 -> bf16 per slot, written at row `slot`.

Numerics. Hopper has no FP4 MMA. E2M1 x 2^s and E4M3 x 2^s are exactly representable in bf16, so
both operands are fed *exactly dequantized* to bf16 tensor-core MMA with fp32 accumulation; every
product is exact and the K reduction is carried in fp32 ("fp32-faithful"). Weights are decoded in
registers (`numerics.dequant_fp4_tile_bf16`, byte-permute PTX); activations are dequantized once
per row (tokens by `quant.mxfp8_to_bf16`, the intermediate by GEMM1's epilogue, which writes
dq(MXFP8(s)) as bf16) so the GEMM main loops do no activation arithmetic.
BLOCK_K is fixed (128) and there is no split-K, so a slot's result does not depend on the tile
configuration or on the other tokens (batch invariance; tests check it).

Schedule. Program (tile, n_block): `tile` indexes the ragged list of (expert, BLOCK_M-row block)
tiles, derived in-kernel from `expert_offsets` (no host sync); the grid is sized for the worst case
and programs past the last tile exit at once. SWAP_AB puts the weight rows on the MMA's M side
(tokens on N), which wastes nothing when an expert has only a few tokens (decode).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..dispatch.tma_copy import PeerRows
from ..reference import ACTIVATIONS
from . import weight_layout
from .weight_layout import quad_to_canonical_tile
from .numerics import (bf16_bits_to_f32, dequant_fp4_tile, dequant_fp4_tile_bf16, dequant_fp8_tile,
                       f32_to_bf16_bits, mxfp8_quantize_tile, round_to_bf16)

BLOCK_K = 128   # NOTES: fixed per shape -> fixed reduction order (never tuned; DESIGN.md §1.1)


def expert_pad(num_local_experts: int) -> int:
    """E_PAD of `tile_of_program`: the expert vector every program scans once (a power of two, >= 2).
    NOTES: no spare slot is needed (a program past the last tile finds no expert and is not real); at
    E = 128 / 256 the old `next_power_of_2(E + 1)` doubled that per-tile scan."""
    return triton.next_power_of_2(max(num_local_experts, 2))


@triton.jit
def tile_of_program(offsets_ptr, pid, num_local_experts, BLOCK_M: tl.constexpr, E_PAD: tl.constexpr):
    """Map a program id to (expert, first row, end row, is_real) on the ragged tile list."""
    experts = tl.arange(0, E_PAD)
    real = experts < num_local_experts
    lo = tl.load(offsets_ptr + experts, mask=real, other=0)
    hi = tl.load(offsets_ptr + experts + 1, mask=real, other=0)
    ntiles = (hi - lo + BLOCK_M - 1) // BLOCK_M
    cum = tl.cumsum(ntiles, axis=0)
    expert = tl.sum((cum <= pid).to(tl.int32), axis=0)
    sel = experts == expert
    first_tile = tl.sum(tl.where(sel, cum - ntiles, 0), axis=0)
    row_start = tl.sum(tl.where(sel, lo, 0), axis=0) + (pid - first_tile) * BLOCK_M
    row_end = tl.sum(tl.where(sel, hi, 0), axis=0)
    return expert, row_start, row_end, pid < tl.sum(ntiles, axis=0)


@triton.jit
def num_tiles(offsets_ptr, num_local_experts, BLOCK_M: tl.constexpr, E_PAD: tl.constexpr):
    """Number of real (expert, row block) tiles of this call."""
    experts = tl.arange(0, E_PAD)
    real = experts < num_local_experts
    lo = tl.load(offsets_ptr + experts, mask=real, other=0)
    hi = tl.load(offsets_ptr + experts + 1, mask=real, other=0)
    return tl.sum((hi - lo + BLOCK_M - 1) // BLOCK_M, axis=0)


@triton.jit
def _load_bf16_tile(ptr, rows64, row_ok, stride, k0, K_DIM, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                    SOFT: tl.constexpr):
    """Rows of exactly dequantized activations (bf16 bits, int16) -> bf16 tile (fp32 when SOFT)."""
    kk = k0 + tl.arange(0, BLOCK_K)
    bits = tl.load(ptr + rows64[:, None] * stride + kk[None, :], mask=row_ok[:, None] & (kk < K_DIM)[None, :],
                   other=0)
    if SOFT:
        return bf16_bits_to_f32(bits)
    else:
        return bits.to(tl.bfloat16, bitcast=True)


@triton.jit
def _load_weight_codes(w_ptr, wsf_ptr, rows64, row_ok, stride_w, stride_wsf, k0, K_DIM,
                       BLOCK_K: tl.constexpr, QUAD: tl.constexpr, TILED: tl.constexpr):
    """Raw MXFP4 rows at column k0: codes uint8 [BLOCK_N, BLOCK_K/2] (canonical byte order, also when
    the weights are stored in the QUAD order of weight_layout.py; QUAD == 2: with the "arith" word bits),
    scales uint8 [BLOCK_N, BLOCK_K/32].
    TILED: the codes are in weight_layout.to_tiled's layout (quad order, 32-row blocks stored K step by K
    step; the row stride inside a step is that step's byte count)."""
    kh = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    kb = k0 // 32 + tl.arange(0, BLOCK_K // 32)
    if TILED:
        step_bytes = tl.minimum(BLOCK_K // 2, K_DIM // 2 - k0 // 2)
        # NOTES: every row starts 16-byte aligned (K % 32 == 0); said explicitly, or Triton loads the tile in
        # narrow pieces and the non-swap-AB tiles of >= 64 tokens fail to compile on sm_90 (as with the
        # specialized scale stride, see _gemm1_swiglu_kernel)
        rows_off = tl.multiple_of((rows64 // 32) * (32 * (K_DIM // 2)) + 32 * (k0 // 2) + (rows64 % 32) * step_bytes,
                                  16)
        c = tl.load(w_ptr + rows_off[:, None] + (kh - k0 // 2)[None, :],
                    mask=row_ok[:, None] & (kh < K_DIM // 2)[None, :], other=0)
    else:
        c = tl.load(w_ptr + rows64[:, None] * stride_w + kh[None, :],
                    mask=row_ok[:, None] & (kh < K_DIM // 2)[None, :], other=0)
    s = tl.load(wsf_ptr + rows64[:, None] * stride_wsf + kb[None, :],
                mask=row_ok[:, None] & (kb < K_DIM // 32)[None, :], other=127)
    if QUAD:
        if k0 + BLOCK_K <= K_DIM:       # a partial last block is stored canonical (weight_layout.py)
            c = quad_to_canonical_tile(c, rows64.shape[0], QUAD == 2)
    return c, s


@triton.jit
def _mx_mma(acc, a, c, s, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWAP_AB: tl.constexpr,
            SOFT: tl.constexpr, DECODE: tl.constexpr):
    """acc += a @ W^T ([M, N]) or, with SWAP_AB, acc += W @ a^T ([N, M]), W = MXFP4 (codes c, scales s).

    a holds exact activation values (bf16; fp32 when SOFT). Every product is exact, sums in fp32.
    DECODE (GPU): 0 = plain Triton arithmetic, 1 = PTX byte-permute decode, 2 = `tl.dot_scaled`
    (Triton decodes E2M1 x 2^s to bf16 straight into the MMA operand layout; same exact values).
    """
    if SOFT:
        # The interpreter's bf16 dot is wrong; fp32 "ieee" is exact for these operands.
        w = dequant_fp4_tile(c, s, BLOCK_N, BLOCK_K)
        if SWAP_AB:
            acc = tl.dot(w, tl.trans(a), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, tl.trans(w), acc, input_precision="ieee")
    elif DECODE == 2:
        if SWAP_AB:
            acc = tl.dot_scaled(c, s, "e2m1", tl.trans(a), None, "bf16", acc)
        else:
            acc = tl.dot_scaled(a, None, "bf16", tl.trans(c), s, "e2m1", acc)
    else:
        w = dequant_fp4_tile_bf16(c, s, BLOCK_N, BLOCK_K, DECODE == 1)
        if SWAP_AB:
            acc = tl.dot(w, tl.trans(a), acc)
        else:
            acc = tl.dot(a, tl.trans(w), acc)
    return acc


@triton.jit
def _gemm1_tile(
        tile,                                                   # index on the ragged tile list
        x_ptr, stride_x,                                        # dequantized tokens: bf16 bits [T, H]
        w1_ptr, w1_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn,   # [E, 2I, H/2], [E, 2I, H/32]
        offsets_ptr, sorted_ptr, weights_ptr,                   # routing plan, topk_weights [T*K]
        act_ptr, stride_act,                                    # out: dq(MXFP8(s)) as bf16 bits [S, I]
        bias_ptr, stride_bias,                                  # optional b1 fp32 [E, 2I]
        num_local_experts, hidden, inter, clamp, alpha,
        TOPK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        E_PAD: tl.constexpr, SWAP_AB: tl.constexpr, HAS_CLAMP: tl.constexpr, FAST_MATH: tl.constexpr,
        ACTIVATION: tl.constexpr, HAS_BIAS: tl.constexpr, SOFT: tl.constexpr, DECODE: tl.constexpr,
        FUSE_GATE_UP: tl.constexpr, QUAD: tl.constexpr, TILED: tl.constexpr):
    expert, row_start, row_end, real = tile_of_program(offsets_ptr, tile, num_local_experts,
                                                       BLOCK_M, E_PAD)
    if real:
        rows = row_start + tl.arange(0, BLOCK_M)
        row_ok = rows < row_end
        slot = tl.load(sorted_ptr + rows, mask=row_ok, other=0)
        tok64 = (slot // TOPK).to(tl.int64)
        n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < inter
        w_base = w1_ptr + expert.to(tl.int64) * stride_we
        ws_base = w1_sf_ptr + expert.to(tl.int64) * stride_wse
        gate_rows = n.to(tl.int64)
        up_rows = gate_rows + inter
        if FUSE_GATE_UP:
            # NOTES: one [2*BLOCK_N]-row weight tile (gate rows, then the matching up rows) and one
            # MMA of twice the width instead of two; split after the loop. Same products, same order.
            r = tl.arange(0, 2 * BLOCK_N)
            both_rows = tl.where(r < BLOCK_N, gate_rows.expand_dims(0).broadcast_to([2, BLOCK_N]).reshape([2 * BLOCK_N]),
                                 up_rows.expand_dims(0).broadcast_to([2, BLOCK_N]).reshape([2 * BLOCK_N]))
            both_ok = n_ok.expand_dims(0).broadcast_to([2, BLOCK_N]).reshape([2 * BLOCK_N])
            if SWAP_AB:
                acc = tl.zeros([2 * BLOCK_N, BLOCK_M], dtype=tl.float32)
            else:
                acc = tl.zeros([BLOCK_M, 2 * BLOCK_N], dtype=tl.float32)
            for k0 in range(0, hidden, BLOCK_K):
                a = _load_bf16_tile(x_ptr, tok64, row_ok, stride_x, k0, hidden, BLOCK_M, BLOCK_K, SOFT)
                c, sc = _load_weight_codes(w_base, ws_base, both_rows, both_ok, stride_wn, stride_wsn, k0, hidden,
                                           BLOCK_K, QUAD, TILED)
                acc = _mx_mma(acc, a, c, sc, 2 * BLOCK_N, BLOCK_K, SWAP_AB, SOFT, DECODE)
            if SWAP_AB:
                acc = tl.trans(acc)                                         # [BLOCK_M, 2 * BLOCK_N]
            acc_g, acc_u = tl.split(tl.permute(tl.reshape(acc, [BLOCK_M, 2, BLOCK_N]), (0, 2, 1)))
        else:
            if SWAP_AB:
                acc_g = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
            else:
                acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            acc_u = tl.zeros_like(acc_g)
            for k0 in range(0, hidden, BLOCK_K):
                a = _load_bf16_tile(x_ptr, tok64, row_ok, stride_x, k0, hidden, BLOCK_M, BLOCK_K, SOFT)
                cg, sg = _load_weight_codes(w_base, ws_base, gate_rows, n_ok, stride_wn, stride_wsn, k0, hidden,
                                            BLOCK_K, QUAD, TILED)
                acc_g = _mx_mma(acc_g, a, cg, sg, BLOCK_N, BLOCK_K, SWAP_AB, SOFT, DECODE)
                cu, su = _load_weight_codes(w_base, ws_base, up_rows, n_ok, stride_wn, stride_wsn, k0, hidden, BLOCK_K,
                                            QUAD, TILED)
                acc_u = _mx_mma(acc_u, a, cu, su, BLOCK_N, BLOCK_K, SWAP_AB, SOFT, DECODE)
            if SWAP_AB:
                acc_g = tl.trans(acc_g)
                acc_u = tl.trans(acc_u)
        _gemm1_epilogue(acc_g, acc_u, rows, row_ok, slot, n, n_ok, expert, weights_ptr, act_ptr, stride_act,
                        bias_ptr, stride_bias, inter, clamp, alpha, BLOCK_M, BLOCK_N, HAS_CLAMP, FAST_MATH,
                        ACTIVATION, HAS_BIAS, SOFT)


@triton.jit
def _gemm1_epilogue(acc_g, acc_u, rows, row_ok, slot, n, n_ok, expert, weights_ptr, act_ptr, stride_act,
                    bias_ptr, stride_bias, inter, clamp, alpha, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    HAS_CLAMP: tl.constexpr, FAST_MATH: tl.constexpr, ACTIVATION: tl.constexpr,
                    HAS_BIAS: tl.constexpr, SOFT: tl.constexpr):
    """GEMM1 epilogue on token-major [BLOCK_M, BLOCK_N] gate/up sums (shared with the Gluon kernel):
    bias, bf16 rounding, clamp, activation, x routing weight, MXFP8 requant -> act rows (bf16 bits)."""
    if HAS_BIAS:
        b_base = bias_ptr + expert.to(tl.int64) * stride_bias
        acc_g += tl.load(b_base + n, mask=n_ok, other=0.0)[None, :]
        acc_u += tl.load(b_base + inter + n, mask=n_ok, other=0.0)[None, :]
    g = round_to_bf16(acc_g, SOFT)
    u = round_to_bf16(acc_u, SOFT)
    if HAS_CLAMP:
        g = tl.minimum(g, clamp)
        u = tl.minimum(tl.maximum(u, -clamp), clamp)
    if ACTIVATION == 0:     # swiglu: g / (1 + exp(-g)) * u
        denom = 1.0 + tl.exp(-g)
    else:                   # swiglu_oai (gpt-oss): g / (1 + exp(-alpha g)) * (u + 1)
        denom = 1.0 + tl.exp(-(alpha * g))
        u = u + 1.0
    if FAST_MATH:
        s = g / denom
    else:
        s = tl.math.div_rn(g, denom)
    route_w = tl.load(weights_ptr + slot, mask=row_ok, other=0.0)
    s = s * u * route_w[:, None]
    # MXFP8 requantization (DESIGN.md §1.1); GEMM2 consumes the exact dequantized values.
    codes, exps = mxfp8_quantize_tile(s, BLOCK_M, BLOCK_N, SOFT)
    sq = dequant_fp8_tile(codes, exps, BLOCK_M, BLOCK_N, SOFT)
    rows64 = rows.to(tl.int64)
    tl.store(act_ptr + rows64[:, None] * stride_act + n[None, :], f32_to_bf16_bits(sq, SOFT),
             mask=row_ok[:, None] & n_ok[None, :])


# NOTES: stride_wsn (the scale row stride) is never specialized: with quad-ordered weights, tiles of >= 64
# tokens that take the weights as the MMA's B operand (swap_ab=False, decode "asm") fail to compile on sm_90
# when it is a multiple of 16 ("Illegal shared layout" in TritonGPUOptimizeDotOperands, Triton 3.6; found
# with the H200 cache's 128x128 tiles at qwen3's H = 2048, checked offline: tests/test_compile_sm90.py).
# The cost: a K step's 4 scale bytes of a row load as bytes instead of one word.
@triton.jit(do_not_specialize=["stride_wsn"])
def _gemm1_swiglu_kernel(
        x_ptr, stride_x,                                        # dequantized tokens: bf16 bits [T, H]
        w1_ptr, w1_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn,   # [E, 2I, H/2], [E, 2I, H/32]
        offsets_ptr, sorted_ptr, weights_ptr,                   # routing plan, topk_weights [T*K]
        act_ptr, stride_act,                                    # out: dq(MXFP8(s)) as bf16 bits [S, I]
        bias_ptr, stride_bias,                                  # optional b1 fp32 [E, 2I]
        num_local_experts, hidden, inter, clamp, alpha,
        tile_offset,                                            # PERSISTENT: first tile of this launch
        TOPK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        E_PAD: tl.constexpr, SWAP_AB: tl.constexpr, HAS_CLAMP: tl.constexpr, FAST_MATH: tl.constexpr,
        ACTIVATION: tl.constexpr, HAS_BIAS: tl.constexpr, SOFT: tl.constexpr, DECODE: tl.constexpr,
        FUSE_GATE_UP: tl.constexpr, QUAD: tl.constexpr, TILED: tl.constexpr,
        PERSISTENT: tl.constexpr):
    # NOTES: PERSISTENT = the overflow launch of a grid sized below the worst case (see
    # `_launch_over_tiles`): its programs loop over the real tiles from `tile_offset` on.
    if PERSISTENT:
        for tile in range(tile_offset + tl.program_id(0), num_tiles(offsets_ptr, num_local_experts, BLOCK_M, E_PAD),
                          tl.num_programs(0)):
            _gemm1_tile(tile, x_ptr, stride_x, w1_ptr, w1_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn,
                offsets_ptr, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr, stride_bias,
                num_local_experts, hidden, inter, clamp, alpha, TOPK, BLOCK_M, BLOCK_N, BLOCK_K, E_PAD, SWAP_AB,
                HAS_CLAMP, FAST_MATH, ACTIVATION, HAS_BIAS, SOFT, DECODE, FUSE_GATE_UP, QUAD, TILED)
    else:
        _gemm1_tile(tl.program_id(0), x_ptr, stride_x, w1_ptr, w1_sf_ptr, stride_we, stride_wn, stride_wse,
            stride_wsn, offsets_ptr, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr, stride_bias,
            num_local_experts, hidden, inter, clamp, alpha, TOPK, BLOCK_M, BLOCK_N, BLOCK_K, E_PAD, SWAP_AB,
            HAS_CLAMP, FAST_MATH, ACTIVATION, HAS_BIAS, SOFT, DECODE, FUSE_GATE_UP, QUAD, TILED)


@triton.jit
def _gemm2_tile(
        tile,                                                   # index on the ragged tile list
        act_ptr, stride_act,                                    # dq intermediate: bf16 bits [S, I]
        w2_ptr, w2_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn,   # [E, H, I/2], [E, H, I/32]
        offsets_ptr, sorted_ptr, weights_ptr,
        out_ptr, stride_out,                                    # out: bf16 bits [T*K, H] at row slot
        row_addr_ptr,                                           # ROW_ADDR: int64 [T*K] address of slot's row
        bias_ptr, stride_bias,                                  # optional b2 fp32 [E, H] (x routing weight)
        num_local_experts, hidden, inter,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, E_PAD: tl.constexpr,
        SWAP_AB: tl.constexpr, HAS_BIAS: tl.constexpr, SOFT: tl.constexpr, DECODE: tl.constexpr,
        ROW_ADDR: tl.constexpr, QUAD: tl.constexpr, TILED: tl.constexpr):
    expert, row_start, row_end, real = tile_of_program(offsets_ptr, tile, num_local_experts,
                                                       BLOCK_M, E_PAD)
    if real:
        rows = row_start + tl.arange(0, BLOCK_M)
        row_ok = rows < row_end
        rows64 = rows.to(tl.int64)
        n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < hidden
        w_base = w2_ptr + expert.to(tl.int64) * stride_we
        ws_base = w2_sf_ptr + expert.to(tl.int64) * stride_wse
        if SWAP_AB:
            acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        else:
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, inter, BLOCK_K):
            a = _load_bf16_tile(act_ptr, rows64, row_ok, stride_act, k0, inter, BLOCK_M, BLOCK_K, SOFT)
            c, s = _load_weight_codes(w_base, ws_base, n.to(tl.int64), n_ok, stride_wn, stride_wsn, k0, inter, BLOCK_K,
                                      QUAD, TILED)
            acc = _mx_mma(acc, a, c, s, BLOCK_N, BLOCK_K, SWAP_AB, SOFT, DECODE)
        if SWAP_AB:
            acc = tl.trans(acc)
        _gemm2_epilogue(acc, rows, row_ok, n, n_ok, expert, sorted_ptr, weights_ptr, out_ptr, stride_out,
                        row_addr_ptr, bias_ptr, stride_bias, HAS_BIAS, SOFT, ROW_ADDR)


@triton.jit
def _gemm2_values(acc, rows, row_ok, n, n_ok, expert, sorted_ptr, weights_ptr, bias_ptr, stride_bias,
                  HAS_BIAS: tl.constexpr, SOFT: tl.constexpr):
    """GEMM2's result rows of a token-major [BLOCK_M, BLOCK_N] tile: (slot of each row, bf16 bits) —
    + routing weight x bias, bf16 rounding (shared with the Gluon kernel's epilogues)."""
    slot = tl.load(sorted_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    if HAS_BIAS:
        route_w = tl.load(weights_ptr + slot, mask=row_ok, other=0.0)
        bias = tl.load(bias_ptr + expert.to(tl.int64) * stride_bias + n, mask=n_ok, other=0.0)
        acc += route_w[:, None] * bias[None, :]
    return slot, f32_to_bf16_bits(acc, SOFT)


@triton.jit
def _gemm2_epilogue(acc, rows, row_ok, n, n_ok, expert, sorted_ptr, weights_ptr, out_ptr, stride_out,
                    row_addr_ptr, bias_ptr, stride_bias, HAS_BIAS: tl.constexpr, SOFT: tl.constexpr,
                    ROW_ADDR: tl.constexpr):
    """GEMM2 epilogue on a token-major [BLOCK_M, BLOCK_N] tile (shared with the Gluon kernel):
    store each row's values (_gemm2_values) at the slot's row (or at its address)."""
    slot, bits = _gemm2_values(acc, rows, row_ok, n, n_ok, expert, sorted_ptr, weights_ptr, bias_ptr, stride_bias,
                               HAS_BIAS, SOFT)
    if ROW_ADDR:
        # NOTES: each slot's row lives wherever the table says — for the symm_mem transport the
        # source rank's `home` row, so the results travel over NVLink while GEMM2 still runs.
        dst = tl.load(row_addr_ptr + slot, mask=row_ok, other=0).to(tl.pointer_type(tl.int16))
        tl.store(dst[:, None] + n[None, :], bits, mask=row_ok[:, None] & n_ok[None, :])
    else:
        tl.store(out_ptr + slot[:, None] * stride_out + n[None, :], bits, mask=row_ok[:, None] & n_ok[None, :])


@triton.jit(do_not_specialize=["stride_wsn"])     # see _gemm1_swiglu_kernel
def _gemm2_kernel(
        act_ptr, stride_act,                                    # dq intermediate: bf16 bits [S, I]
        w2_ptr, w2_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn,   # [E, H, I/2], [E, H, I/32]
        offsets_ptr, sorted_ptr, weights_ptr,
        out_ptr, stride_out,                                    # out: bf16 bits [T*K, H] at row slot
        row_addr_ptr,                                           # ROW_ADDR: int64 [T*K] address of slot's row
        bias_ptr, stride_bias,                                  # optional b2 fp32 [E, H] (x routing weight)
        num_local_experts, hidden, inter,
        tile_offset,                                            # PERSISTENT: first tile of this launch
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, E_PAD: tl.constexpr,
        SWAP_AB: tl.constexpr, HAS_BIAS: tl.constexpr, SOFT: tl.constexpr, DECODE: tl.constexpr,
        ROW_ADDR: tl.constexpr, QUAD: tl.constexpr, TILED: tl.constexpr, PERSISTENT: tl.constexpr):
    # NOTES: PERSISTENT = the overflow launch of a grid sized below the worst case (see
    # `_launch_over_tiles`): its programs loop over the real tiles from `tile_offset` on.
    if PERSISTENT:
        for tile in range(tile_offset + tl.program_id(0), num_tiles(offsets_ptr, num_local_experts, BLOCK_M, E_PAD),
                          tl.num_programs(0)):
            _gemm2_tile(tile, act_ptr, stride_act, w2_ptr, w2_sf_ptr, stride_we, stride_wn, stride_wse,
                stride_wsn, offsets_ptr, sorted_ptr, weights_ptr, out_ptr, stride_out, row_addr_ptr, bias_ptr,
                stride_bias, num_local_experts, hidden, inter, BLOCK_M, BLOCK_N, BLOCK_K, E_PAD, SWAP_AB, HAS_BIAS,
                SOFT, DECODE, ROW_ADDR, QUAD, TILED)
    else:
        _gemm2_tile(tl.program_id(0), act_ptr, stride_act, w2_ptr, w2_sf_ptr, stride_we, stride_wn, stride_wse,
            stride_wsn, offsets_ptr, sorted_ptr, weights_ptr, out_ptr, stride_out, row_addr_ptr, bias_ptr,
            stride_bias, num_local_experts, hidden, inter, BLOCK_M, BLOCK_N, BLOCK_K, E_PAD, SWAP_AB, HAS_BIAS,
            SOFT, DECODE, ROW_ADDR, QUAD, TILED)


# ----------------------------------------------------------------------------- launchers
def _max_tiles(num_slots: int, num_local_experts: int, block_m: int) -> int:
    """Upper bound on sum_e ceil(count_e / BLOCK_M) over any routing of `num_slots` slots."""
    return max(1, min(triton.cdiv(num_slots, block_m) + num_local_experts, num_slots))


def _launch_over_tiles(kernel, grid_n: int, num_slots: int, e_local: int, block_m: int,
                       expected_slots: int | None, args: tuple, kwargs: dict, n_fastest: bool | int | None = None,
                       max_tiles=None, first_kwargs: dict | None = None):
    """Launch `kernel` over the ragged tile list without knowing the routed counts (no host sync).

    Without `expected_slots`: one program per possible tile (the worst case for `num_slots`).
    With it (capacity-sized EP calls, mostly empty rows): a plain launch sized for twice the
    expected slots, then an overflow launch whose programs loop over any tiles beyond it — for the
    usual routing they find none and exit. NOTES: a single looping launch needs ~70 more registers
    (decode GEMM1 165 -> 235: fewer CTAs per SM), so the common tiles run in the plain kernel.
    `first_kwargs`: extra kwargs of the first launch only (the Gluon GEMM2's programmatic dependent launch).
    """
    max_tiles = max_tiles or (lambda slots: _max_tiles(slots, e_local, block_m))    # tiles for `slots` rows
    worst = max_tiles(num_slots)
    first = worst if expected_slots is None else min(worst, max_tiles(2 * expected_slots))
    if n_fastest is None:           # kernels without the N_FASTEST flag: tiles on grid axis 0
        def grid(tiles):
            return (tiles, grid_n)
    else:                           # NOTES: grid axis 1 holds at most 65535 programs; an int > 1: grouped tiles
        n_fastest = n_fastest if first <= 65535 else False       # (wgmma_gemm._tile_pids)
        kwargs = dict(kwargs, N_FASTEST=n_fastest)

        def grid(tiles):
            return (grid_n, tiles) if n_fastest else (tiles, grid_n)
    handle = kernel[grid(first)](*args, 0, PERSISTENT=False, **dict(kwargs, **(first_kwargs or {})))
    if first < worst:
        kernel[grid(min(first, worst - first))](*args, first, PERSISTENT=True, **kwargs)
    return handle


def check_tiled(name: str, codes: torch.Tensor, tiled: bool) -> None:
    """Tiled codes (weight_layout.to_tiled) are addressed from each expert's start: they must be contiguous
    per expert with N a multiple of 32 and K >= 128."""
    if tiled and (codes.stride(-1) != 1 or codes.stride(-2) != codes.shape[-1]
                  or codes.shape[-2] % weight_layout.TILE_ROWS or codes.shape[-1] < weight_layout.QUAD_BLOCK_BYTES):
        raise ValueError(f"{name}: tiled codes must be contiguous experts with N % {weight_layout.TILE_ROWS} == 0 and "
                         f"K >= 128, got shape {tuple(codes.shape)} strides {codes.stride()}")


def gemm1_swiglu(x_bits, w1, w1_sf, plan, topk_weights, act, *, topk: int, clamp: float | None,
                 fast_math: bool, cfg, soft: bool, activation: str = "swiglu",
                 alpha: float = 1.702, bias=None, expected_slots: int | None = None, quad: bool = False,
                 tiled: bool = False, pdl_launch: int = 0, signal_rows: bool = False, rows_scratch=None):
    """Launch GEMM1 + SwiGLU + requant: x_bits int16 [T, H] (bf16 bits of the dequantized tokens),
    w1 uint8 [E, 2I, H/2] (`quad`: in weight_layout's quad byte order; `tiled`: its tiled layout, which
    implies quad), w1_sf uint8 [E, 2I, H/32] -> act int16 [S, I] (sorted slot rows). `pdl_launch`: the Gluon
    kernel's place in the programmatic dependent launch chain (wgmma_gemm.GDC_*; the Triton kernel launches plainly).
    `signal_rows` (Gluon): add each finished (tile, channel block)'s rows to plan.expert_rows_done (early GEMM2).
    `rows_scratch` (int16 [>= T*K, H], needed by a Gluon cfg.tma_b): where GEMM1 first copies the tokens in the
    plan's order, which its TMA ring reads (row_gather.gather_rows)."""
    quad = quad or tiled
    check_tiled("w1", w1, tiled)
    if cfg.kernel == "gluon" and not soft:
        from .row_gather import gather_rows
        from .wgmma_gemm import gemm1_swiglu_wgmma
        if cfg.tma_b and rows_scratch is None:
            raise ValueError(f"{cfg}: tma_b needs rows_scratch, an int16 [>= {plan.num_slots}, H] buffer for the "
                             "tokens in the plan's order")
        x_rows = gather_rows(x_bits, plan, topk, rows_scratch) if cfg.tma_b else None
        return gemm1_swiglu_wgmma(x_bits, w1, w1_sf, plan, topk_weights, act, topk=topk, clamp=clamp,
                                  fast_math=fast_math, cfg=cfg, activation=activation, alpha=alpha, bias=bias,
                                  expected_slots=expected_slots, quad=quad, tiled=tiled, pdl_launch=pdl_launch,
                                  signal_rows=signal_rows, x_rows=x_rows)
    if signal_rows:
        raise ValueError("signal_rows (early GEMM2) needs the Gluon GEMM1 on a GPU")
    e_local, two_i, half_h = w1.shape
    inter, hidden = two_i // 2, half_h * 2
    e_pad = expert_pad(e_local)
    args = (x_bits, x_bits.stride(0),
            w1, w1_sf, w1.stride(0), w1.stride(1), w1_sf.stride(0), w1_sf.stride(1),
            plan.expert_offsets, plan.sorted_slots, topk_weights,
            act, act.stride(0),
            bias if bias is not None else topk_weights, bias.stride(0) if bias is not None else 0,
            e_local, hidden, inter, float(clamp) if clamp is not None else 0.0, float(alpha))
    kwargs = dict(TOPK=topk, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=BLOCK_K, E_PAD=e_pad,
                  SWAP_AB=cfg.swap_ab, HAS_CLAMP=clamp is not None, FAST_MATH=fast_math,
                  ACTIVATION=ACTIVATIONS.index(activation), HAS_BIAS=bias is not None, SOFT=soft,
                  DECODE=cfg.decode_mode, FUSE_GATE_UP=cfg.fuse_gate_up, QUAD=quad, TILED=tiled,
                  num_warps=cfg.num_warps, num_stages=cfg.num_stages, **cfg.launch_options)
    return _launch_over_tiles(_gemm1_swiglu_kernel, triton.cdiv(inter, cfg.block_n), plan.num_slots, e_local,
                              cfg.block_m, expected_slots, args, kwargs)


def gemm2(act, w2, w2_sf, plan, out_bits, *, cfg, soft: bool, topk_weights=None,
          bias=None, expected_slots: int | None = None, out_row_addr=None, quad: bool = False,
          tiled: bool = False, pdl: bool = False, early_rows: int = 0):
    """Launch GEMM2: act int16 [S, I] (bf16 bits) x w2 [E, H, I/2] -> out_bits int16 [T*K, H] at row slot.
    `out_row_addr` (int64 [T*K]): write slot s's row at that absolute address instead (e.g. a peer's
    memory); out_bits is then unused. A `tma_copy.PeerRows`: the same rows, stored by TMA (Gluon kernel).
    `quad` / `tiled`: as in gemm1_swiglu. `pdl`: the Gluon kernel starts while the previous kernel on the stream
    (GEMM1) still runs and waits for it before reading `act` (wgmma_gemm.gemm2_wgmma); with `early_rows` (GEMM1's
    channel blocks, its signal_rows on) only until the expert's rows in plan.expert_rows_done are complete."""
    quad = quad or tiled
    check_tiled("w2", w2, tiled)
    if isinstance(out_row_addr, PeerRows) and (cfg.kernel != "gluon" or soft):
        out_row_addr = out_row_addr.addresses     # TMA stores are the Gluon kernel's; the same rows by SM stores
    if cfg.kernel == "gluon" and not soft:
        from .wgmma_gemm import gemm2_wgmma
        return gemm2_wgmma(act, w2, w2_sf, plan, out_bits, cfg=cfg, topk_weights=topk_weights, bias=bias,
                           expected_slots=expected_slots, out_row_addr=out_row_addr, quad=quad, tiled=tiled, pdl=pdl,
                           early_rows=early_rows)
    if early_rows:
        raise ValueError("early_rows (early GEMM2) needs the Gluon GEMM2 on a GPU")
    e_local, hidden, half_i = w2.shape
    inter = half_i * 2
    e_pad = expert_pad(e_local)
    args = (act, act.stride(0),
            w2, w2_sf, w2.stride(0), w2.stride(1), w2_sf.stride(0), w2_sf.stride(1),
            plan.expert_offsets, plan.sorted_slots, topk_weights if topk_weights is not None else out_bits,
            out_bits, out_bits.stride(0), out_row_addr if out_row_addr is not None else out_bits,
            bias if bias is not None else out_bits, bias.stride(0) if bias is not None else 0,
            e_local, hidden, inter)
    kwargs = dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=BLOCK_K, E_PAD=e_pad,
                  SWAP_AB=cfg.swap_ab, HAS_BIAS=bias is not None, SOFT=soft, DECODE=cfg.decode_mode,
                  ROW_ADDR=out_row_addr is not None, QUAD=quad, TILED=tiled,
                  num_warps=cfg.num_warps, num_stages=cfg.num_stages, **cfg.launch_options)
    return _launch_over_tiles(_gemm2_kernel, triton.cdiv(hidden, cfg.block_n), plan.num_slots, e_local,
                              cfg.block_m, expected_slots, args, kwargs)
