"""Experiment (not wired into the layer): the grouped GEMMs with the MXFP4 decode in its own warps (Gluon warp
specialization).

Why (benchmarks/NOTES.md "v5", "v14", "v19"): at mid and prefill sizes the shipped Gluon kernels decode each K step
in the same warps that issue its wgmma, so decode, MMA and weight loads run in lockstep (at T = 2048 the GEMMs reach
~270-360 TFLOP/s of ~800 bf16). Here a 4-warp *decode partition* turns the codes into the exact bf16 A tile and stores
it into a DEPTH-deep shared-memory ring; the default partition (4 warps) only loads the activation tiles (cp.async)
and issues the wgmmas with A from shared memory — the same k16 wgmma sequence in ascending k as the shipped kernels
(A from registers or from shared memory is the same instruction), so the result must be bitwise the same; the GPU
check below says whether it is.

Handshake per A slot s (mbarriers): each decode partition waits a_empty[s], stores its rows, fences the async proxy,
syncs its 4 warps and arrives on a_ready[s] (which counts the decode partitions); MMA waits a_ready[s], issues step i,
waits until step i - 1 retired, arrives a_empty[(i - 1) % DEPTH]. Scope: the plain layer's GEMM2 (no bias, no EP row
addresses) and GEMM1 (swiglu without clamp or bias, fast math), tiled quad weights with scale words, K % 128 == 0, one
A tile per program of 64 rows per MMA warpgroup or per decode partition (`a_rows`; GEMM2: that many output channels,
GEMM1: half gate, half up), N-block-major grid.

    python benchmarks/experiments/ws_gemm.py --compile     # offline: sm_90 registers / spills / barriers (no GPU)
    python benchmarks/experiments/ws_gemm.py --gpu         # each GEMM bitwise vs the shipped pick + time, dsv3

Measured (H100, session 16, benchmarks/NOTES.md "v20"): bitwise equal to the shipped kernels in every variant and
case, and slower in every one — 1.2-2.2x with one 4-warp decode partition, no better with two (8 decode warps on a
128-row A tile), e.g. dsv3 GEMM2 T = 2048 1778 µs shipped vs 2203 best. Session 17 ("v21"): at T = 1 / 8, 2-4 decode
partitions taking turns by K step (up to 16 decode warps on one 64-row A tile): bitwise equal again, 1.3-2.4x slower
(qwen3 T = 1 GEMM1 14.3 µs shipped vs 21.5 best). Kept as a worked example of Gluon warp specialization on Hopper
(mbarrier rings between partitions, setmaxnreg, several worker partitions), not wired in.
"""
from __future__ import annotations

import argparse
import os
import sys

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (async_copy, fence_async_shared, mbarrier, warpgroup_mma,
                                                              warpgroup_mma_wait)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from tmoe.kernels import wgmma_gemm as wg  # noqa: E402
from tmoe.kernels.grouped_gemm import _gemm2_epilogue  # noqa: E402

BLOCK_K = wg.BLOCK_K


@gluon.jit
def _ws_decode(a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_ww, stride_wsn, first, second, limit,
               k_words, k_groups, num_full, BLOCK_A: gl.constexpr, GATE_UP: gl.constexpr, MMA: gl.constexpr,
               DEPTH: gl.constexpr, QUAD: gl.constexpr, PART: gl.constexpr = 0, STEP_SPLIT: gl.constexpr = 1):
    """Decode partition: step i's exact bf16 weights [BLOCK_A, 128] into A slot i % DEPTH (codes one step ahead in
    registers, unmasked loads: rows past the block read its last valid row, as the shipped 4-warp loops). The A rows
    as the shipped kernels' (wgmma_gemm._weight_rows; GATE_UP: GEMM1's gate / up rows interleaved by 8). MMA: a
    4-warp wgmma layout whose A-operand layout the decode emits (the MMA partition may have 8 warps: the shared-memory
    tile is the same). PART: which BLOCK_A rows of a slot this partition fills (several decode partitions per A tile;
    each arrives on a_ready once, so a_ready counts the partitions). STEP_SPLIT > 1: STEP_SPLIT partitions take turns
    by K step instead (this one decodes every row of steps PART, PART + STEP_SPLIT, ...; a_ready counts one arrive)."""
    ROW0: gl.constexpr = PART * BLOCK_A if STEP_SPLIT == 1 else 0
    SHIFT: gl.constexpr = ROW0 // 2 if GATE_UP else ROW0    # GATE_UP: rows r + 64 are channels c + 32 (_weight_rows)
    first += SHIFT
    second += SHIFT
    limit -= SHIFT
    A_LAYOUT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    WORD3: gl.constexpr = wg._word_layout(BLOCK_A, gl.num_warps())
    ROWS: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, WORD3))
    rows_w, rows_ok = wg._weight_rows(first, second, limit, BLOCK_A, GATE_UP, ROWS)
    lut = wg._lookup_tables(lut_ptr, BLOCK_A, ROWS)
    code_rows = wg._code_rows(rows_w, stride_ww, k_words, BLOCK_K // 8, True)
    first_step: gl.constexpr = PART if STEP_SPLIT > 1 else 0
    c, sc = wg._load_codes(w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn,
                           gl.minimum(first_step, num_full - 1) * BLOCK_K, k_words, k_groups, WORD3, False, True, 32,
                           False)
    for i in range(first_step, num_full, STEP_SPLIT):
        c_next, sc_next = wg._load_codes(w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn,
                                         gl.minimum(i + STEP_SPLIT, num_full - 1) * BLOCK_K, k_words, k_groups, WORD3,
                                         False, True, 32, False)
        words = wg._exchange(c, WORD3, QUAD)
        pairs = wg._scale_pairs(sc, i * BLOCK_K, k_groups, WORD3, False, True, QUAD == 2)
        a = wg._decode_a(words, pairs, lut, BLOCK_A, WORD3, A_LAYOUT, QUAD)
        s = i % DEPTH
        mbarrier.wait(a_empty.index(s), ((i // DEPTH) & 1) ^ 1)     # a fresh barrier passes parity 1
        a_smem.index(s).slice(ROW0, BLOCK_A, 0).store(a)
        fence_async_shared()
        gl.thread_barrier()             # the partition's 128 threads stored before the one arrive
        mbarrier.arrive(a_ready.index(s))
        c = c_next
        sc = sc_next


@gluon.jit
def _ws_mma(a_smem, b_smem, a_ready, a_empty, act_ptr, b_rows64, b_ok, stride_act, K_DIM, num_full,
            BLOCK_A: gl.constexpr, BLOCK_M: gl.constexpr, STAGES: gl.constexpr, DEPTH: gl.constexpr,
            MMA: gl.constexpr, B_LOAD: gl.constexpr):
    """Default partition: the activation ring (cp.async, STAGES - 2 tiles ahead: one wgmma stays in flight) and the
    wgmmas, A from the decode partition's slots. Returns (acc [BLOCK_A, BLOCK_M] fp32,)."""
    AHEAD: gl.constexpr = STAGES - 2
    bk = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, B_LOAD))
    b_base = act_ptr + b_rows64[:, None] * stride_act
    for s in gl.static_range(AHEAD):
        wg._issue_b(b_smem, b_base, bk, b_ok, s, K_DIM, STAGES)
    mbarrier.wait(a_ready.index(0), 0)
    wg._b_ready(AHEAD)
    wg._issue_b(b_smem, b_base, bk, b_ok, AHEAD, K_DIM, STAGES)
    acc = warpgroup_mma(a_smem.index(0), b_smem.index(0).permute((1, 0)),
                        gl.zeros([BLOCK_A, BLOCK_M], gl.float32, MMA), is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))     # returns at once; the loop's carried type
    for i in range(1, num_full):
        mbarrier.wait(a_ready.index(i % DEPTH), (i // DEPTH) & 1)
        wg._b_ready(AHEAD)
        wg._issue_b(b_smem, b_base, bk, b_ok, i + AHEAD, K_DIM, STAGES)   # the slot step i - 2 read (retired)
        acc = warpgroup_mma(a_smem.index(i % DEPTH), b_smem.index(i % STAGES).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
        mbarrier.arrive(a_empty.index((i - 1) % DEPTH))       # step i - 1's wgmma retired: its A slot is free
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    async_copy.wait_group(0)
    return (acc,)       # NOTES: a default partition returns a tuple (warp_specialize flattens it)


@gluon.jit
def _ws_buffers(BLOCK_A: gl.constexpr, BLOCK_M: gl.constexpr, STAGES: gl.constexpr, DEPTH: gl.constexpr,
                READY_COUNT: gl.constexpr):
    """The A ring (decode -> MMA), the activation ring and the A ring's ready / empty mbarriers (ready: one arrive
    per decode partition filling rows of a slot, one in all where partitions take turns by step; empty: one, the MMA
    partition's)."""
    A_SMEM: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_A, BLOCK_K], gl.bfloat16)
    a_smem = gl.allocate_shared_memory(gl.bfloat16, [DEPTH, BLOCK_A, BLOCK_K], A_SMEM)
    B_SMEM: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_K], gl.bfloat16)
    b_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_M, BLOCK_K], B_SMEM)
    a_ready = gl.allocate_shared_memory(gl.int64, [DEPTH, 1], mbarrier.MBarrierLayout())
    a_empty = gl.allocate_shared_memory(gl.int64, [DEPTH, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(DEPTH):
        mbarrier.init(a_ready.index(s), count=READY_COUNT)
        mbarrier.init(a_empty.index(s), count=1)
    return a_smem, b_smem, a_ready, a_empty


@gluon.jit
def _ws_region(a_smem, b_smem, a_ready, a_empty, b_ptr, b_rows64, b_ok, stride_b, K_DIM, num_full, w_words, ws_base,
               lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words, k_groups, BLOCK_A: gl.constexpr,
               GATE_UP: gl.constexpr, BLOCK_M: gl.constexpr, STAGES: gl.constexpr, DEPTH: gl.constexpr,
               QUAD: gl.constexpr, MMA: gl.constexpr, MMA_DEC: gl.constexpr, B_LOAD: gl.constexpr,
               DECODE_REGS: gl.constexpr, NUM_DEC: gl.constexpr, STEPS: gl.constexpr = False):
    """The warp-specialized K loop of one BLOCK_A-row A tile: the MMA partition (_ws_mma, this kernel's warps) and
    NUM_DEC 4-warp decode partitions — each filling BLOCK_A / NUM_DEC rows of every A slot (NUM_DEC 1 or 2), or with
    STEPS (NUM_DEC 2..4) each decoding all rows of every NUM_DEC-th K step. Returns acc.
    NOTES: written out per NUM_DEC — a Gluon tuple cannot hold the partition functions or layouts."""
    ROWS_A: gl.constexpr = BLOCK_A if STEPS else BLOCK_A // NUM_DEC
    SPLIT: gl.constexpr = NUM_DEC if STEPS else 1
    if NUM_DEC == 4:
        acc, = gl.warp_specialize([(_ws_mma, (
            a_smem, b_smem, a_ready, a_empty, b_ptr, b_rows64, b_ok, stride_b, K_DIM, num_full, BLOCK_A, BLOCK_M,
            STAGES, DEPTH, MMA, B_LOAD)), (_ws_decode, (
            a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words,
            k_groups, num_full, ROWS_A, GATE_UP, MMA_DEC, DEPTH, QUAD, 0, SPLIT)), (_ws_decode, (
            a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words,
            k_groups, num_full, ROWS_A, GATE_UP, MMA_DEC, DEPTH, QUAD, 1, SPLIT)), (_ws_decode, (
            a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words,
            k_groups, num_full, ROWS_A, GATE_UP, MMA_DEC, DEPTH, QUAD, 2, SPLIT)), (_ws_decode, (
            a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words,
            k_groups, num_full, ROWS_A, GATE_UP, MMA_DEC, DEPTH, QUAD, 3, SPLIT))], [4, 4, 4, 4],
            [DECODE_REGS, DECODE_REGS, DECODE_REGS, DECODE_REGS])
    elif NUM_DEC == 3:
        acc, = gl.warp_specialize([(_ws_mma, (
            a_smem, b_smem, a_ready, a_empty, b_ptr, b_rows64, b_ok, stride_b, K_DIM, num_full, BLOCK_A, BLOCK_M,
            STAGES, DEPTH, MMA, B_LOAD)), (_ws_decode, (
            a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words,
            k_groups, num_full, ROWS_A, GATE_UP, MMA_DEC, DEPTH, QUAD, 0, SPLIT)), (_ws_decode, (
            a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words,
            k_groups, num_full, ROWS_A, GATE_UP, MMA_DEC, DEPTH, QUAD, 1, SPLIT)), (_ws_decode, (
            a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words,
            k_groups, num_full, ROWS_A, GATE_UP, MMA_DEC, DEPTH, QUAD, 2, SPLIT))], [4, 4, 4],
            [DECODE_REGS, DECODE_REGS, DECODE_REGS])
    elif NUM_DEC == 2:
        acc, = gl.warp_specialize([(_ws_mma, (
            a_smem, b_smem, a_ready, a_empty, b_ptr, b_rows64, b_ok, stride_b, K_DIM, num_full, BLOCK_A, BLOCK_M,
            STAGES, DEPTH, MMA, B_LOAD)), (_ws_decode, (
            a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words,
            k_groups, num_full, ROWS_A, GATE_UP, MMA_DEC, DEPTH, QUAD, 0, SPLIT)), (_ws_decode, (
            a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words,
            k_groups, num_full, ROWS_A, GATE_UP, MMA_DEC, DEPTH, QUAD, 1, SPLIT))], [4, 4],
            [DECODE_REGS, DECODE_REGS])
    else:
        acc, = gl.warp_specialize([(_ws_mma, (
            a_smem, b_smem, a_ready, a_empty, b_ptr, b_rows64, b_ok, stride_b, K_DIM, num_full, BLOCK_A, BLOCK_M,
            STAGES, DEPTH, MMA, B_LOAD)), (_ws_decode, (
            a_smem, a_ready, a_empty, w_words, ws_base, lut_ptr, stride_wn, stride_wsn, first, second, limit, k_words,
            k_groups, num_full, ROWS_A, GATE_UP, MMA_DEC, DEPTH, QUAD, 0, SPLIT))], [4], [DECODE_REGS])
    return acc


@gluon.jit
def _ws_gemm1_kernel(x_ptr, stride_x, w1_ptr, w1_sf_ptr, lut_ptr, stride_we, stride_wn, stride_wse, stride_wsn,
                     offsets_ptr, sorted_ptr, weights_ptr, act_ptr, stride_act, num_local_experts, hidden, inter,
                     k_words, k_groups, TOPK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                     E_PAD: gl.constexpr, STAGES: gl.constexpr, DEPTH: gl.constexpr, QUAD: gl.constexpr,
                     MMA: gl.constexpr, MMA_DEC: gl.constexpr, B_LOAD: gl.constexpr, EPI: gl.constexpr,
                     DECODE_REGS: gl.constexpr, NUM_DEC: gl.constexpr = 1, STEPS: gl.constexpr = False):
    """GEMM1 + SwiGLU + MXFP8 requant (no clamp, no bias), the gate / up channels [n0, n0 + BLOCK_N) of one token
    tile: A tile = 2 * BLOCK_N rows (wgmma_gemm._gemm1_block's order and epilogue), NUM_DEC decode partitions (see
    _ws_region; STEPS: taking turns by K step)."""
    pid, npid, nblk = wg._tile_pids(True)
    expert, row_start, row_end, real = wg.tile_of_program(offsets_ptr, pid, num_local_experts, BLOCK_M, E_PAD,
                                                          wg.SPLIT_ALL, BLOCK_M, BLOCK_M)
    if real:
        n0 = nblk * BLOCK_N
        a_smem, b_smem, a_ready, a_empty = _ws_buffers(2 * BLOCK_N, BLOCK_M, STAGES, DEPTH, 1 if STEPS else NUM_DEC)
        m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, B_LOAD))
        tok_ok = row_start + m < row_end
        tok64 = (gl.load(sorted_ptr + row_start + m, mask=tok_ok, other=0) // TOPK).to(gl.int64)
        num_full = hidden // BLOCK_K
        w_words = w1_ptr + expert.to(gl.int64) * stride_we
        ws_base = w1_sf_ptr + expert.to(gl.int64) * stride_wse
        acc = _ws_region(a_smem, b_smem, a_ready, a_empty, x_ptr, tok64, tok_ok, stride_x, hidden, num_full, w_words,
                         ws_base, lut_ptr, stride_wn, stride_wsn, n0, inter + n0, inter - n0, k_words, k_groups,
                         2 * BLOCK_N, True, BLOCK_M, STAGES, DEPTH, QUAD, MMA, MMA_DEC, B_LOAD, DECODE_REGS, NUM_DEC,
                         STEPS)
        wg.gemm1_tile_epilogue(acc, n0, row_start, row_end, expert, sorted_ptr, weights_ptr, act_ptr, stride_act,
                               weights_ptr, 0, inter, 0.0, 1.702, BLOCK_M, BLOCK_N, False, True, 0, False, EPI)


@gluon.jit
def _ws_gemm2_kernel(act_ptr, stride_act, w2_ptr, w2_sf_ptr, lut_ptr, stride_we, stride_wn, stride_wse, stride_wsn,
                     offsets_ptr, sorted_ptr, weights_ptr, out_ptr, stride_out, num_local_experts, hidden, inter,
                     k_words, k_groups, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, E_PAD: gl.constexpr,
                     STAGES: gl.constexpr, DEPTH: gl.constexpr, QUAD: gl.constexpr, MMA: gl.constexpr,
                     MMA_DEC: gl.constexpr, B_LOAD: gl.constexpr, EPI: gl.constexpr, DECODE_REGS: gl.constexpr,
                     NUM_DEC: gl.constexpr = 1, STEPS: gl.constexpr = False):
    pid, npid, nblk = wg._tile_pids(True)
    expert, row_start, row_end, real = wg.tile_of_program(offsets_ptr, pid, num_local_experts, BLOCK_M, E_PAD,
                                                          wg.SPLIT_ALL, BLOCK_M, BLOCK_M)
    if real:
        n0 = nblk * BLOCK_N
        a_smem, b_smem, a_ready, a_empty = _ws_buffers(BLOCK_N, BLOCK_M, STAGES, DEPTH, 1 if STEPS else NUM_DEC)
        m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, B_LOAD))
        w_words = w2_ptr + expert.to(gl.int64) * stride_we
        ws_base = w2_sf_ptr + expert.to(gl.int64) * stride_wse
        num_full = inter // BLOCK_K
        b_rows64 = (row_start + m).to(gl.int64)
        b_ok = row_start + m < row_end
        acc = _ws_region(a_smem, b_smem, a_ready, a_empty, act_ptr, b_rows64, b_ok, stride_act, inter, num_full,
                         w_words, ws_base, lut_ptr, stride_wn, stride_wsn, n0, n0, hidden - n0, k_words, k_groups,
                         BLOCK_N, False, BLOCK_M, STAGES, DEPTH, QUAD, MMA, MMA_DEC, B_LOAD, DECODE_REGS, NUM_DEC,
                         STEPS)
        acc = gl.convert_layout(gl.permute(acc, (1, 0)), EPI)
        rows = row_start + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, EPI))
        n = n0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, EPI))
        _gemm2_epilogue(acc, rows, rows < row_end, n, n < hidden, expert, sorted_ptr, weights_ptr, out_ptr,
                        stride_out, out_ptr, weights_ptr, 0, False, False, False)


def a_rows(mma_warps: int, num_dec: int, steps: bool = False) -> int:
    """Rows of the A tile: 64 per MMA warpgroup, and 64 per decode partition (a 4-warp MMA partition issues two
    64-row wgmmas per k16 step on a 128-row tile); partitions taking turns by step (`steps`) each decode all rows."""
    return 64 * (mma_warps // 4 if steps else max(mma_warps // 4, num_dec))


def constexprs(block_m: int, block_n: int = 64, stages: int = 4, depth: int = 3, decode_regs: int = 152,
               gemm1: bool = False, quad: int | None = None, mma_warps: int = 4, num_dec: int = 1,
               steps: bool = False) -> dict:
    """GEMM2: block_n weight rows per program; GEMM1 (gemm1=True): block_n gate + block_n up channels; the A tile
    (block_n or 2 * block_n rows) is a_rows(mma_warps, num_dec, steps). quad: weight_layout.is_quad of the weights
    (default: what transform_weights_for_mega_moe makes on Hopper)."""
    quad = quad if quad is not None else (2 if gemm1 else 1)
    assert block_n * (2 if gemm1 else 1) == a_rows(mma_warps, num_dec, steps), "block_n does not match the A tile"
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, E_PAD=256, STAGES=stages, DEPTH=depth, QUAD=quad,
                DECODE_REGS=decode_regs, NUM_DEC=num_dec, STEPS=steps, **({"TOPK": 8} if gemm1 else {}),
                **wg._layouts(block_m, mma_warps), MMA_DEC=wg._layouts(block_m, 4)["MMA"])


def compile_offline() -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
    from gluon_compile_worker import compile_gluon, inspect
    g2 = {"act_ptr": "*bf16", "w2_ptr": "*i32", "w2_sf_ptr": "*u8", "lut_ptr": "*i32", "offsets_ptr": "*i32",
          "sorted_ptr": "*i32", "weights_ptr": "*fp32", "out_ptr": "*i16"}
    g1 = {"x_ptr": "*bf16", "w1_ptr": "*i32", "w1_sf_ptr": "*u8", "lut_ptr": "*i32", "offsets_ptr": "*i32",
          "sorted_ptr": "*i32", "weights_ptr": "*fp32", "act_ptr": "*i16"}
    kernels = {"gemm1": (_ws_gemm1_kernel, g1), "gemm2": (_ws_gemm2_kernel, g2)}
    # (GEMM, tokens per tile, block_n, activation stages, A slots, register cap, MMA warps, decode partitions,
    # partitions by step, decode registers)
    for name, block_m, block_n, stages, depth, cap, warps, num_dec, steps, dec_regs in (
            ("gemm2", 64, 64, 3, 3, 128, 4, 1, False, 152), ("gemm2", 64, 64, 4, 3, None, 4, 1, False, 152),
            ("gemm2", 128, 64, 3, 2, None, 4, 1, False, 152), ("gemm1", 64, 32, 3, 3, 128, 4, 1, False, 152),
            ("gemm2", 128, 128, 3, 2, None, 8, 1, False, 152), ("gemm1", 128, 64, 3, 2, None, 8, 1, False, 152),
            ("gemm2", 128, 128, 3, 2, None, 4, 2, False, 152), ("gemm2", 64, 128, 3, 3, None, 4, 2, False, 152),
            ("gemm1", 128, 64, 3, 2, None, 4, 2, False, 152), ("gemm2", 128, 128, 3, 2, None, 8, 2, False, 152),
            ("gemm1", 8, 32, 4, 4, None, 4, 2, True, 152), ("gemm2", 8, 64, 4, 4, None, 4, 2, True, 152),
            ("gemm1", 8, 32, 6, 6, None, 4, 4, True, 96), ("gemm2", 8, 64, 6, 6, None, 4, 4, True, 96),
            ("gemm1", 8, 32, 5, 6, None, 4, 3, True, 120)):
        kernel, ptrs = kernels[name]
        compiled = compile_gluon(kernel, ptrs, set(), constexprs(block_m, block_n, stages, depth, dec_regs,
                                                                 gemm1=name == "gemm1", mma_warps=warps,
                                                                 num_dec=num_dec, steps=steps), warps, maxnreg=cap)
        ptx = compiled.asm["ptx"]
        info = inspect(compiled, 0)
        print(f"{name} bm{block_m} bn{block_n} w{warps}+{4 * num_dec}{' by step' if steps else ''} s{stages} "
              f"depth{depth} cap{cap} dec{dec_regs}: "
              f"regs={info['regs']} "
              f"spills={info['spills']} shared={compiled.metadata.shared} wgmma={ptx.count('wgmma.mma_async')} "
              f"setmaxnreg={ptx.count('setmaxnreg')} named_bar={ptx.count('bar.sync') + ptx.count('barrier.sync')} "
              f"mbarrier_wait={ptx.count('mbarrier.try_wait')}")


def ws_gemm2(act, w2, w2_sf, plan, out_bits, *, quad: int, block_m: int, stages: int, depth: int,
             decode_regs: int = 152, maxnreg: int | None = None, mma_warps: int = 4, num_dec: int = 1,
             steps: bool = False):
    """Launch the experiment on a plan of grouped_gemm.gemm2's arguments (tiled quad weights, K % 128 == 0)."""
    import torch
    import triton
    from tmoe.kernels.grouped_gemm import _max_tiles
    e_local, hidden, half_i = w2.shape
    inter = half_i * 2
    words = wg._as_words(w2)
    block_n = a_rows(mma_warps, num_dec, steps)
    grid = (triton.cdiv(hidden, block_n), _max_tiles(plan.num_slots, e_local, block_m))
    return _ws_gemm2_kernel[grid](
        act.view(torch.bfloat16), act.stride(0), words, w2_sf, wg.fp4_lut(act.device), words.stride(0),
        words.stride(1), w2_sf.stride(0), w2_sf.stride(1), plan.expert_offsets, plan.sorted_slots, out_bits, out_bits,
        out_bits.stride(0), e_local, hidden, inter, inter // 8, inter // 32, num_warps=mma_warps,
        **constexprs(block_m, block_n, stages, depth, decode_regs, quad=quad, mma_warps=mma_warps, num_dec=num_dec,
                     steps=steps),
        **({"maxnreg": maxnreg} if maxnreg else {}))


def ws_gemm1(x_bits, w1, w1_sf, plan, topk_weights, act, *, topk: int, quad: int, block_m: int, stages: int,
             depth: int, decode_regs: int = 152, maxnreg: int | None = None, mma_warps: int = 4, num_dec: int = 1,
             steps: bool = False):
    """Launch the GEMM1 experiment (swiglu, no clamp / bias, fast math) on grouped_gemm.gemm1_swiglu's arguments."""
    import torch
    import triton
    from tmoe.kernels.grouped_gemm import _max_tiles
    e_local, two_i, half_h = w1.shape
    inter, hidden = two_i // 2, half_h * 2
    words = wg._as_words(w1)
    block_n = a_rows(mma_warps, num_dec, steps) // 2     # gate + up rows
    grid = (triton.cdiv(inter, block_n), _max_tiles(plan.num_slots, e_local, block_m))
    return _ws_gemm1_kernel[grid](
        x_bits.view(torch.bfloat16), x_bits.stride(0), words, w1_sf, wg.fp4_lut(x_bits.device), words.stride(0),
        words.stride(1), w1_sf.stride(0), w1_sf.stride(1), plan.expert_offsets, plan.sorted_slots, topk_weights, act,
        act.stride(0), e_local, hidden, inter, hidden // 8, hidden // 32, num_warps=mma_warps,
        **dict(constexprs(block_m, block_n, stages, depth, decode_regs, gemm1=True, quad=quad, mma_warps=mma_warps,
                          num_dec=num_dec, steps=steps),
               TOPK=topk),
        **({"maxnreg": maxnreg} if maxnreg else {}))


# (tokens per tile, activation stages, A slots, register cap, MMA warps, decode partitions, decode registers,
# partitions by step).
# NOTES: session 16's first run (H100): one 4-warp decode partition per CTA was 1.2-2.2x slower than the shipped
# kernels everywhere (same bits) — fewer warps decoding than the shipped tiles, whose every warp decodes. Two decode
# partitions (8 warps) feed 128-row A tiles: 4 MMA warps (two 64-row wgmmas per k16) + 8 decode warps at 168
# registers (setmaxnreg: decode 152, MMA 200), or 8 + 8 at 128 (decode 104, MMA 152).
VARIANTS = ((128, 3, 2, None, 8, 1, 152, False), (128, 3, 2, None, 4, 2, 152, False),
            (128, 3, 3, None, 4, 2, 152, False), (64, 3, 3, None, 4, 2, 152, False),
            (128, 3, 2, None, 4, 2, 128, False), (128, 3, 2, None, 8, 2, 104, False))
# Small T (<= SMALL_T tokens; session 17): where a GEMM is few programs per SM (qwen3 / gpt-oss / v4flash T = 1), each
# 8-token tile's 64-row A tile decoded by 1-4 partitions taking turns by K step, i.e. up to 4x the decode warps per
# weight tile of the shipped 4-warp loop (one CTA per SM: Triton sizes a warp-specialized CTA's registers for one).
SMALL_T = 32
SMALL_VARIANTS = ((8, 4, 4, None, 4, 1, 152, False), (8, 4, 4, None, 4, 2, 152, True),
                  (8, 5, 6, None, 4, 3, 120, True), (8, 6, 6, None, 4, 4, 96, True))


def gpu_check(workload: str, tokens: list[int]) -> None:
    """Each GEMM bitwise against the shipped one (the cache's pick, same routing and inputs) and timed beside it."""
    import torch
    import tmoe
    from tmoe.kernels import grouped_gemm
    from tmoe.kernels.configs import select_config
    from tmoe.kernels.quant import mxfp8_to_bf16
    from tmoe.kernels.routing import build_routing
    from tmoe.kernels.weight_layout import is_quad, is_tiled
    from tmoe.workloads import WORKLOADS, make_routing, random_mxfp4_weights
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from ceilings import time_graph
    wl = WORKLOADS[workload]
    e, k, h, i = wl.num_experts, wl.topk, wl.hidden, wl.intermediate
    l1, l2 = tmoe.transform_weights_for_mega_moe(random_mxfp4_weights(e, 2 * i, h, seed=1),
                                                 random_mxfp4_weights(e, h, i, seed=2))
    assert is_tiled(l2) and i % BLOCK_K.value == 0, "the experiment reads tiled weights with whole K steps"
    dev = torch.cuda.get_device_name()
    print(f"{dev}: {workload}, each GEMM alone, CUDA graph")

    def label(block_m, stages, depth, cap, warps, num_dec, dec_regs, steps):
        return (f"bm{block_m} w{warps}+{4 * num_dec}{' by step' if steps else ''} s{stages} depth{depth} cap{cap} "
                f"dec{dec_regs}")

    def report(t, gemm, name, run, out, ref, rows):
        out.fill_(0)
        try:
            compiled = run()
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"  T={t:5} {gemm} ws {name}: FAILED {exc!s:.300}", flush=True)
            return
        same = bool(torch.equal(out[:rows], ref))
        print(f"  T={t:5} {gemm} ws {name}: {time_graph(run, reps=20):8.1f} us same={same} "
              f"regs={compiled.n_regs} spills={compiled.n_spills}", flush=True)
    for t in tokens:
        variants = SMALL_VARIANTS if t <= SMALL_T else VARIANTS
        buf = tmoe.get_symm_buffer_for_mega_moe(None, e, t, k, h, i)
        idx, tw = make_routing(t, e, k, "uniform", seed=t)
        tmoe.layer.fill_buffer(buf, torch.randn(t, h, device="cuda").to(torch.bfloat16), idx, tw)
        mxfp8_to_bf16(buf.x[:t], buf.x_sf[:t], buf.x_dq)
        plan = build_routing(buf.topk_idx[:t], e, capacity_slots=t * k)
        pick = {kern: select_config(kern, t * k, e, False, num_experts=e, hidden=h, intermediate=i, topk=k,
                                    hopper=True, device_name=dev) for kern in ("gemm1", "gemm2")}

        def shipped1():
            return grouped_gemm.gemm1_swiglu(buf.x_dq, l1[0], l1[1], plan, buf.topk_weights, buf.act, topk=k,
                                             clamp=wl.clamp, fast_math=True, cfg=pick["gemm1"], soft=False,
                                             quad=is_quad(l1), tiled=is_tiled(l1))
        shipped1()
        torch.cuda.synchronize()
        ref1 = buf.act[: t * k].clone()
        print(f"  T={t:5} GEMM1 shipped {pick['gemm1']}: {time_graph(shipped1, reps=20):8.1f} us")
        if wl.clamp is None and h % BLOCK_K.value == 0:       # the experiment's GEMM1: swiglu, no clamp, whole K steps
            for block_m, stages, depth, cap, warps, num_dec, dec_regs, steps in variants:
                def run1():
                    return ws_gemm1(buf.x_dq, l1[0], l1[1], plan, buf.topk_weights, buf.act, topk=k,
                                    quad=is_quad(l1), block_m=block_m, stages=stages, depth=depth, maxnreg=cap,
                                    mma_warps=warps, num_dec=num_dec, decode_regs=dec_regs, steps=steps)
                report(t, "GEMM1", label(block_m, stages, depth, cap, warps, num_dec, dec_regs, steps), run1, buf.act,
                       ref1, t * k)
        shipped1()      # GEMM2 reads the shipped GEMM1's act

        def shipped():
            return grouped_gemm.gemm2(buf.act, l2[0], l2[1], plan, buf.slot_out, cfg=pick["gemm2"], soft=False,
                                      quad=is_quad(l2), tiled=is_tiled(l2))
        shipped()
        torch.cuda.synchronize()
        ref = buf.slot_out[: t * k].clone()
        print(f"  T={t:5} GEMM2 shipped {pick['gemm2']}: {time_graph(shipped, reps=20):8.1f} us")
        for block_m, stages, depth, cap, warps, num_dec, dec_regs, steps in variants:
            def run():
                return ws_gemm2(buf.act, l2[0], l2[1], plan, buf.slot_out, quad=is_quad(l2), block_m=block_m,
                                stages=stages, depth=depth, maxnreg=cap, mma_warps=warps, num_dec=num_dec,
                                decode_regs=dec_regs, steps=steps)
            report(t, "GEMM2", label(block_m, stages, depth, cap, warps, num_dec, dec_regs, steps), run, buf.slot_out,
                   ref, t * k)
        buf.destroy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile", action="store_true", help="compile for sm_90 offline and print what it became")
    ap.add_argument("--gpu", action="store_true", help="bitwise vs the shipped GEMM2 and timed beside it")
    ap.add_argument("--workload", default="dsv3")
    ap.add_argument("--tokens", default="512,2048,8192")
    args = ap.parse_args()
    if args.compile:
        compile_offline()
    if args.gpu:
        gpu_check(args.workload, [int(v) for v in args.tokens.split(",")])


if __name__ == "__main__":
    main()
