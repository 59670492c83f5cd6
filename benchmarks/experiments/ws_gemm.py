"""EXPERIMENT, not wired into the layer: warp-specialized Gluon prefill GEMMs (Hopper).

Why (benchmarks/NOTES.md "v5"/"v6"): the 8-warp prefill kernel of kernels/wgmma_gemm.py shares one
cp.async activation ring between its two warpgroups, and the per-K-step CTA barrier of that ring
keeps them in lockstep, so both decode while the tensor cores idle. Here three partitions
(`gl.warp_specialize`) run independently and meet only at per-slot mbarriers:

  consumer 0 (default partition, 4 warps) and consumer 1 (4 warps): each decodes its own 64 weight
      rows straight into the wgmma register operand and issues its own wgmmas (same k16 sequence as
      the other kernels, so the same bits); it waits `ready[s]` for an activation slot and, once its
      wgmma on that slot has completed, releases it with one elected arrive on `empty[s]` (count 2);
  loader (default partition, 4 warps): cp.async of the [block_m, 128] activation tile of each K step
      into slot s after `empty[s]`, then `cp.async.mbarrier.arrive.noinc` on `ready[s]` (count 128).

Offline (sm_90 SASS): the consumers' loops hold only partition-local barriers (`bar.sync id, 128`)
around the elected arrive, none across partitions. Prefill tiles only (block_m 128 or 256), plain
launch (no EP overflow launch), no tail split. Run `python benchmarks/experiments/check_ws.py` on a
Hopper GPU: bitwise check against the shipped Gluon kernel, then timings of both.
"""
from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (async_copy, fence_async_shared, mbarrier,
                                                              warpgroup_mma, warpgroup_mma_wait)

from tmoe.kernels.grouped_gemm import _gemm1_epilogue, _gemm2_epilogue, _launch_over_tiles, expert_pad
from tmoe.kernels.wgmma_gemm import (BLOCK_K, SPLIT_ALL, _as_words, _decode_a, _exchange, _load_codes, _next_a,
                                     _tile_pids, _weight_rows, _word_layout, tile_of_program)
from tmoe.reference import ACTIVATIONS

LOADER_ROWS = gl.constexpr(8)         # rows per cp.async chunk of the 4-warp loader: one row address per thread
                                      # (the loader runs on the registers the consumers leave: 40-64)


@gluon.jit
def _consume(b_smem, ready, empty, w_words, ws_base, stride_ww, stride_wsn, first, second, limit, K_DIM, k_words,
             k_groups, GATE_UP: gl.constexpr, BLOCK_M: gl.constexpr, STAGES: gl.constexpr, QUAD: gl.constexpr):
    """acc[64, BLOCK_M] of one consumer partition (4 warps): `_wgmma_gemm` with mbarrier slots."""
    MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_M, 16])
    A_LAYOUT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    WORD3: gl.constexpr = _word_layout(64, 4)
    rows_w, rows_ok = _weight_rows(first, second, limit, 64, GATE_UP, gl.SliceLayout(1, gl.SliceLayout(2, WORD3)))
    num_k = gl.cdiv(K_DIM, BLOCK_K)
    c, sc = _load_codes(w_words, ws_base, rows_w, rows_ok, stride_ww, stride_wsn, 0, k_words, k_groups, WORD3, False)
    c_next, sc_next = _load_codes(w_words, ws_base, rows_w, rows_ok & (num_k > 1), stride_ww, stride_wsn, BLOCK_K,
                                  k_words, k_groups, WORD3, False)
    a = _decode_a(_exchange(c, WORD3, QUAD), sc.to(gl.int32), 64, WORD3, A_LAYOUT)
    mbarrier.wait(ready.index(0), 0)
    fence_async_shared()
    acc = warpgroup_mma(a, b_smem.index(0).permute((1, 0)), gl.zeros([64, BLOCK_M], gl.float32, MMA),
                        is_async=True)
    c = c_next
    sc = sc_next
    for i in range(1, num_k):
        acc, a, c, sc = _next_a(acc, c, sc, w_words, ws_base, rows_w, rows_ok, stride_ww, stride_wsn, i, num_k,
                                k_words, k_groups, 64, WORD3, A_LAYOUT, QUAD, False)
        mbarrier.arrive(empty.index((i - 1) % STAGES))               # wgmma i-1 done: this partition's release
        mbarrier.wait(ready.index(i % STAGES), (i // STAGES) & 1)
        fence_async_shared()
        acc = warpgroup_mma(a, b_smem.index(i % STAGES).permute((1, 0)), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    return acc


@gluon.jit
def _load_b(b_smem, ready, empty, b_ptr, stride_b, sorted_ptr, row_start, row_end, K_DIM, real, topk,
            GATHER: gl.constexpr):
    """Loader (the default partition, 4 warps): activation rows of the tile (GATHER: token rows of the
    sorted slots). NOTES: Triton 3.6 hands partitions their constexpr arguments as runtime values, so
    this one takes only runtime values and reads the tile shape from the ring's (static) shape. It runs
    on the registers the consumers leave (40-80), so the tile's source rows sit in a shared-memory
    table, read back per 8-row chunk, instead of one hoisted address per chunk in registers."""
    STAGES: gl.constexpr = b_smem.shape[0]
    BLOCK_M: gl.constexpr = b_smem.shape[1]
    L: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [4, 1], [1, 0])
    RL: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    table = gl.allocate_shared_memory(gl.int32, [BLOCK_M], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    rows = row_start + gl.arange(0, BLOCK_M, layout=RL)
    ok = rows < row_end
    if GATHER:
        tile_src = gl.load(sorted_ptr + rows, mask=ok, other=0) // topk
    else:
        tile_src = rows
    table.store(gl.where(ok, tile_src, -1))
    gl.thread_barrier()
    kk = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, L))
    num_k = gl.where(real, gl.cdiv(K_DIM, BLOCK_K), 0)
    for j in range(num_k):
        s = j % STAGES
        if j >= STAGES:
            mbarrier.wait(empty.index(s), ((j // STAGES) - 1) & 1)
        k_ok = (j * BLOCK_K + kk) < K_DIM
        for r0 in gl.static_range(0, BLOCK_M, LOADER_ROWS):
            src = table.slice(r0, LOADER_ROWS).load(gl.SliceLayout(1, L))
            async_copy.async_copy_global_to_shared(
                b_smem.index(s).slice(r0, LOADER_ROWS, dim=0),
                b_ptr + src.to(gl.int64)[:, None] * stride_b + (j * BLOCK_K + kk)[None, :],
                mask=(src >= 0)[:, None] & k_ok[None, :])
        async_copy.mbarrier_arrive(ready.index(s), increment_count=False)


@gluon.jit
def _gemm1_part(b_smem, ready, empty, w1_ptr, w1_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn, sorted_ptr,
                weights_ptr, act_ptr, stride_act, bias_ptr, stride_bias, expert, row_start, row_end, c0, hidden,
                inter, clamp, alpha, k_words, k_groups, real, flags):
    """One consumer of GEMM1: channels c0 .. c0 + 31 (their gate and up rows), then its epilogue."""
    STAGES: gl.constexpr = b_smem.shape[0]
    BLOCK_M: gl.constexpr = b_smem.shape[1]
    HAS_CLAMP: gl.constexpr = flags.shape[0] == 2
    FAST_MATH: gl.constexpr = flags.shape[1] == 2
    ACTIVATION: gl.constexpr = flags.shape[2] - 1
    HAS_BIAS: gl.constexpr = flags.shape[3] == 2
    QUAD: gl.constexpr = flags.shape[4] == 2
    if real:
        acc = _consume(b_smem, ready, empty, w1_ptr + expert.to(gl.int64) * stride_we,
                       w1_sf_ptr + expert.to(gl.int64) * stride_wse, stride_wn, stride_wsn, c0, inter + c0,
                       inter - c0, hidden, k_words, k_groups, True, BLOCK_M, STAGES, QUAD)
        EPI: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
        acc = gl.permute(gl.reshape(acc, [4, 2, 8, BLOCK_M]), (3, 0, 2, 1))
        acc_g, acc_u = gl.split(gl.reshape(acc, [BLOCK_M, 32, 2]))
        acc_g = gl.convert_layout(acc_g, EPI)
        acc_u = gl.convert_layout(acc_u, EPI)
        rows = row_start + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, EPI))
        row_ok = rows < row_end
        slot = gl.load(sorted_ptr + rows, mask=row_ok, other=0)
        n = c0 + gl.arange(0, 32, layout=gl.SliceLayout(0, EPI))
        _gemm1_epilogue(acc_g, acc_u, rows, row_ok, slot, n, n < inter, expert, weights_ptr, act_ptr, stride_act,
                        bias_ptr, stride_bias, inter, clamp, alpha, BLOCK_M, 32, HAS_CLAMP, FAST_MATH, ACTIVATION,
                        HAS_BIAS, False)


@gluon.jit
def _gemm1_consumer(b_smem, ready, empty, x_ptr, stride_x, w1_ptr, w1_sf_ptr, stride_we, stride_wn, stride_wse,
                    stride_wsn, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr, stride_bias, expert,
                    row_start, row_end, hidden, inter, clamp, alpha, k_words, k_groups, real, topk, flags, c0):
    _gemm1_part(b_smem, ready, empty, w1_ptr, w1_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn, sorted_ptr,
                weights_ptr, act_ptr, stride_act, bias_ptr, stride_bias, expert, row_start, row_end, c0, hidden,
                inter, clamp, alpha, k_words, k_groups, real, flags)


@gluon.jit
def _gemm1_loader(b_smem, ready, empty, x_ptr, stride_x, w1_ptr, w1_sf_ptr, stride_we, stride_wn, stride_wse,
                  stride_wsn, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr, stride_bias, expert, row_start,
                  row_end, hidden, inter, clamp, alpha, k_words, k_groups, real, topk, flags, c0):
    _load_b(b_smem, ready, empty, x_ptr, stride_x, sorted_ptr, row_start, row_end, hidden, real, topk, True)


@gluon.jit
def _flags(HAS_CLAMP: gl.constexpr, FAST_MATH: gl.constexpr, ACTIVATION: gl.constexpr, HAS_BIAS: gl.constexpr,
           QUAD: gl.constexpr):
    """The compile-time flags as the *shape* of a tiny shared-memory descriptor (extent 2 = on).
    NOTES: Triton 3.6's warp_specialize passes constexpr arguments to partitions as runtime values,
    while descriptor shapes stay static; the partitions read their flags back from this shape."""
    return gl.allocate_shared_memory(gl.int8, [1 + HAS_CLAMP, 1 + FAST_MATH, 1 + ACTIVATION, 1 + HAS_BIAS, 1 + QUAD],
                                     gl.SwizzledSharedLayout(1, 1, 1, [4, 3, 2, 1, 0]))


@gluon.jit
def _init_ring(BLOCK_M: gl.constexpr, STAGES: gl.constexpr):
    B_SMEM: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_K], gl.bfloat16)
    b_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_M, BLOCK_K], B_SMEM)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=128)      # the loader's 128 threads (cp.async arrive, noinc)
        mbarrier.init(empty.index(s), count=2)        # one elected arrive per consumer partition
    return b_smem, ready, empty


@gluon.jit
def _gemm1_ws_kernel(x_ptr, stride_x, w1_ptr, w1_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn,
                     offsets_ptr, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr, stride_bias,
                     num_local_experts, hidden, inter, clamp, alpha, k_words, k_groups, tile_offset,
                     TOPK: gl.constexpr, BLOCK_M: gl.constexpr, E_PAD: gl.constexpr, HAS_CLAMP: gl.constexpr,
                     FAST_MATH: gl.constexpr, ACTIVATION: gl.constexpr, HAS_BIAS: gl.constexpr,
                     STAGES: gl.constexpr, QUAD: gl.constexpr, PERSISTENT: gl.constexpr, N_FASTEST: gl.constexpr):
    pid, npid, nblk = _tile_pids(N_FASTEST)
    expert, row_start, row_end, real = tile_of_program(offsets_ptr, pid, num_local_experts, BLOCK_M, E_PAD,
                                                       SPLIT_ALL, BLOCK_M, BLOCK_M)
    b_smem, ready, empty = _init_ring(BLOCK_M, STAGES)
    args = (b_smem, ready, empty, x_ptr, stride_x, w1_ptr, w1_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn,
            sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr, stride_bias, expert, row_start, row_end,
            hidden, inter, clamp, alpha, k_words, k_groups, real, TOPK, _flags(HAS_CLAMP, FAST_MATH, ACTIVATION,
                                                                               HAS_BIAS, QUAD))
    REGS: gl.constexpr = 224 if BLOCK_M == 256 else 216
    n0 = nblk * 64                      # consumer k: channels n0 + 32 k .. + 31
    gl.warp_specialize([(_gemm1_loader, args + (n0,)), (_gemm1_consumer, args + (n0,)),
                        (_gemm1_consumer, args + (n0 + 32,))], [4, 4], [REGS, REGS])


@gluon.jit
def _gemm2_part(b_smem, ready, empty, w2_ptr, w2_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn, sorted_ptr,
                weights_ptr, out_ptr, stride_out, bias_ptr, stride_bias, expert, row_start, row_end, c0, hidden,
                inter, k_words, k_groups, real, flags):
    """One consumer of GEMM2: output channels c0 .. c0 + 63, then its epilogue."""
    STAGES: gl.constexpr = b_smem.shape[0]
    BLOCK_M: gl.constexpr = b_smem.shape[1]
    HAS_BIAS: gl.constexpr = flags.shape[3] == 2
    QUAD: gl.constexpr = flags.shape[4] == 2
    if real:
        acc = _consume(b_smem, ready, empty, w2_ptr + expert.to(gl.int64) * stride_we,
                       w2_sf_ptr + expert.to(gl.int64) * stride_wse, stride_wn, stride_wsn, c0, c0, hidden - c0,
                       inter, k_words, k_groups, False, BLOCK_M, STAGES, QUAD)
        EPI: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
        acc = gl.convert_layout(gl.permute(acc, (1, 0)), EPI)
        rows = row_start + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, EPI))
        n = c0 + gl.arange(0, 64, layout=gl.SliceLayout(0, EPI))
        _gemm2_epilogue(acc, rows, rows < row_end, n, n < hidden, expert, sorted_ptr, weights_ptr, out_ptr,
                        stride_out, out_ptr, bias_ptr, stride_bias, HAS_BIAS, False, False)


@gluon.jit
def _gemm2_consumer(b_smem, ready, empty, act_ptr, stride_act, w2_ptr, w2_sf_ptr, stride_we, stride_wn, stride_wse,
                    stride_wsn, sorted_ptr, weights_ptr, out_ptr, stride_out, bias_ptr, stride_bias, expert,
                    row_start, row_end, hidden, inter, k_words, k_groups, real, flags, c0):
    _gemm2_part(b_smem, ready, empty, w2_ptr, w2_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn, sorted_ptr,
                weights_ptr, out_ptr, stride_out, bias_ptr, stride_bias, expert, row_start, row_end, c0, hidden,
                inter, k_words, k_groups, real, flags)


@gluon.jit
def _gemm2_loader(b_smem, ready, empty, act_ptr, stride_act, w2_ptr, w2_sf_ptr, stride_we, stride_wn, stride_wse,
                  stride_wsn, sorted_ptr, weights_ptr, out_ptr, stride_out, bias_ptr, stride_bias, expert, row_start,
                  row_end, hidden, inter, k_words, k_groups, real, flags, c0):
    _load_b(b_smem, ready, empty, act_ptr, stride_act, sorted_ptr, row_start, row_end, inter, real, 1, False)


@gluon.jit
def _gemm2_ws_kernel(act_ptr, stride_act, w2_ptr, w2_sf_ptr, stride_we, stride_wn, stride_wse, stride_wsn,
                     offsets_ptr, sorted_ptr, weights_ptr, out_ptr, stride_out, bias_ptr, stride_bias,
                     num_local_experts, hidden, inter, k_words, k_groups, tile_offset,
                     BLOCK_M: gl.constexpr, E_PAD: gl.constexpr, HAS_BIAS: gl.constexpr, STAGES: gl.constexpr,
                     QUAD: gl.constexpr, PERSISTENT: gl.constexpr, N_FASTEST: gl.constexpr):
    pid, npid, nblk = _tile_pids(N_FASTEST)
    expert, row_start, row_end, real = tile_of_program(offsets_ptr, pid, num_local_experts, BLOCK_M, E_PAD,
                                                       SPLIT_ALL, BLOCK_M, BLOCK_M)
    b_smem, ready, empty = _init_ring(BLOCK_M, STAGES)
    args = (b_smem, ready, empty, act_ptr, stride_act, w2_ptr, w2_sf_ptr, stride_we, stride_wn, stride_wse,
            stride_wsn, sorted_ptr, weights_ptr, out_ptr, stride_out, bias_ptr, stride_bias, expert, row_start,
            row_end, hidden, inter, k_words, k_groups, real, _flags(False, False, 0, HAS_BIAS, QUAD))
    REGS: gl.constexpr = 224 if BLOCK_M == 256 else 216
    n0 = nblk * 128                     # consumer k: output channels n0 + 64 k .. + 63
    gl.warp_specialize([(_gemm2_loader, args + (n0,)), (_gemm2_consumer, args + (n0,)),
                        (_gemm2_consumer, args + (n0 + 64,))], [4, 4], [REGS, REGS])


# ----------------------------------------------------------------------------- launchers (plain grid only)
def _check_k(k_dim: int) -> None:
    if k_dim % BLOCK_K.value:
        raise ValueError(f"ws experiment: needs K % {BLOCK_K.value} == 0 (no peeled partial step), got K={k_dim}")


def gemm1_swiglu_ws(x_bits, w1, w1_sf, plan, topk_weights, act, *, topk: int, clamp, fast_math: bool,
                    block_m: int = 256, stages: int = 2, activation: str = "swiglu", alpha: float = 1.702,
                    bias=None, quad: bool = False):
    """`grouped_gemm.gemm1_swiglu` with the warp-specialized kernel (64 channels = gate + up per tile)."""
    e_local, two_i, half_h = w1.shape
    inter, hidden = two_i // 2, half_h * 2
    _check_k(hidden)
    w1_words = _as_words(w1)
    args = (x_bits.view(torch.bfloat16), x_bits.stride(0),
            w1_words, w1_sf, w1_words.stride(0), w1_words.stride(1), w1_sf.stride(0), w1_sf.stride(1),
            plan.expert_offsets, plan.sorted_slots, topk_weights, act, act.stride(0),
            bias if bias is not None else topk_weights, bias.stride(0) if bias is not None else 0,
            e_local, hidden, inter, float(clamp) if clamp is not None else 0.0, float(alpha), hidden // 8, hidden // 32)
    kwargs = dict(TOPK=topk, BLOCK_M=block_m, E_PAD=expert_pad(e_local), HAS_CLAMP=clamp is not None,
                  FAST_MATH=fast_math, ACTIVATION=ACTIVATIONS.index(activation), HAS_BIAS=bias is not None,
                  STAGES=stages, QUAD=quad, num_warps=4)
    return _launch_over_tiles(_gemm1_ws_kernel, triton.cdiv(inter, 64), plan.num_slots, e_local, block_m, None,
                              args, kwargs, n_fastest=True)


def gemm2_ws(act, w2, w2_sf, plan, out_bits, *, block_m: int = 256, stages: int = 2, topk_weights=None, bias=None,
             quad: bool = False):
    """`grouped_gemm.gemm2` with the warp-specialized kernel (128 output channels per tile)."""
    e_local, hidden, half_i = w2.shape
    inter = half_i * 2
    _check_k(inter)
    w2_words = _as_words(w2)
    args = (act.view(torch.bfloat16), act.stride(0),
            w2_words, w2_sf, w2_words.stride(0), w2_words.stride(1), w2_sf.stride(0), w2_sf.stride(1),
            plan.expert_offsets, plan.sorted_slots, topk_weights if topk_weights is not None else out_bits,
            out_bits, out_bits.stride(0), bias if bias is not None else out_bits,
            bias.stride(0) if bias is not None else 0, e_local, hidden, inter, inter // 8, inter // 32)
    kwargs = dict(BLOCK_M=block_m, E_PAD=expert_pad(e_local), HAS_BIAS=bias is not None,
                  STAGES=stages, QUAD=quad, num_warps=4)
    return _launch_over_tiles(_gemm2_ws_kernel, triton.cdiv(hidden, 128), plan.num_slots, e_local, block_m, None,
                              args, kwargs, n_fastest=True)
