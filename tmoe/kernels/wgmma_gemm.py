"""Grouped GEMMs in Gluon (Hopper): MXFP4 weights decoded straight into the wgmma A operand registers
(swap-AB: weight rows on the MMA M side, tokens on N), no shared-memory round trip for the weights.
Decode tiles: 4 warps, 8–64 tokens. Prefill tiles: 8 warps (two warpgroups, each its own 64 weight
rows, sharing one activation ring) with 128–256 tokens, optionally with each expert's small remainder
in a separate tail launch (SPLIT_*), run N-block-major (`_tile_pids`).

Same schedule, math and epilogues as `grouped_gemm`, so every result is bitwise identical to the
Triton kernels (GPU tests): the same exact bf16 operand values, the same k16 wgmma sequence in
ascending k, fp32 accumulation, BLOCK_K = 128. What differs is how a K step is fed:

  Triton kernel:  cp.async codes -> smem -> regs -> decode -> smem -> wgmma -> wait
  this kernel:    16-byte code loads issued one step ahead -> quad exchange (butterfly shuffles) ->
                  wait for the previous wgmma -> decode into the A registers -> async wgmma;
                  activations arrive by cp.async in a STAGES-deep NVMMA-swizzled ring (B operand)
                  (4-warp tiles and 8-warp half tiles, GemmConfig.prefetch >= 3: the codes come through a
                  shared-memory ring that many steps deep instead, each lane reading back its own cp.async
                  bytes: _wgmma_gemm_ring)
Half tiles (`_half_rows`, configs.half_tile_block_n): 8 weight rows per warp, the wgmma's other 8 rows zeros.

NOTES (register A operand, bf16 with k_width = 2): a thread of warp w holds rows 16w + g (+8, +64)
and, per k16 block, k pairs (2t, 2t+1) and (2t+8, 2t+9) with g = lane / 4, t = lane % 4. A pair
(k, k+1) is exactly the low and high nibble of one code byte, so the decode emits each 32-bit A
register directly from one byte (`_FP4_PAIRS_ASM`): no interleaving shuffles. The bytes a thread
needs (j = t mod 4 of the 64-byte row slice of a K step) are strided, so each lane loads 16
contiguous bytes and the lanes of a quad swap bytes (`_QUAD_EXCHANGE_ASM`).
A K step is ~200 instructions per thread (4 warps, 64 weight rows, the "arith" decode; ~80 of them on the ALU pipe,
which bound the table-lookup decode: benchmarks/NOTES.md "v10", "v23"). With row-major weights both the H100
and the H200 streamed them at 55-60% of their read bandwidth — an access-pattern limit (64-byte pieces
of rows K/2 bytes apart); the tiled layout (weight_layout.to_tiled: 2 KB runs per 32 rows and K step)
reaches ~80% on the H100 (benchmarks/NOTES.md "v8").
GEMM2 can store its rows into other ranks' memory (the symm_mem transport's fused return): by SM stores at
addresses (ROW_ADDR, the Triton epilogue) or by TMA stores issued from shared memory (ROW_TMA,
dispatch/tma_copy.store_tile_rows), which do not stall the epilogue on NVLink.
GPU only (sm_90): the Triton interpreter cannot run Gluon; CPU runs use `grouped_gemm` (same bits).
"""
from __future__ import annotations

import functools

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (async_copy, fence_async_shared, mbarrier, tma,
                                                              warpgroup_mma, warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ..dispatch import tma_copy
from ..reference import ACTIVATIONS
from . import configs, pdl, ptx_patch, weight_layout
from .numerics import FP4_MAGNITUDE_LOOKUP_PTX
from .grouped_gemm import (BLOCK_K as _BLOCK_K, _gemm1_epilogue, _gemm2_epilogue, _gemm2_values, _launch_over_tiles,
                           _max_tiles, expert_pad)

BLOCK_K = gl.constexpr(_BLOCK_K)
ptx_patch.install()     # GemmConfig.tma_b's ring: see ptx_patch

# NOTES (decode): one code word = bytes j, j+4, j+8, j+12 of a row (one 32-k scale group) + that
# group's scale as bf16x2 -> 4 bf16x2 registers, register i = (value of byte i's low nibble, of its high
# nibble) = the A-operand pair (k, k+1), k = 2 * (j + 4i). Same lookup tables and the same exact
# scale multiply as numerics._FP4_TO_BF16_ASM (hence bitwise the same values); the signs are merged
# into the high-byte lookups 4 at a time and the pairs are selected directly. Operands (each input is
# packed 8 times): $4 = the word, $12 = the scale pair (`_scale_pairs`), $20 / $28 = th0 / tl0 of the
# lookup held in registers (`_lookup_tables`).
# The lookup decoders share the table lookups (head) and the pair selection + exact scale multiply (tail).
_LOOKUP_HEAD = """
{
.reg .b32 m, mh, w4, y0, y1, hb0, lb0, hb1, lb1, t0, t1, t2, t3, th0, th1, tl0, tl1;
""" + FP4_MAGNITUDE_LOOKUP_PTX.replace("mov.b32 th0, 0x3F3F3F00;", "mov.b32 th0, $20;").replace(
    "mov.b32 tl0, 0xC0800000;", "mov.b32 tl0, $28;") + "shl.b32 w4, $4, 4;\n"
_LOOKUP_TAIL = """prmt.b32 t0, lb0, hb0, 0x5140;
prmt.b32 t1, lb0, hb0, 0x7362;
prmt.b32 t2, lb1, hb1, 0x5140;
prmt.b32 t3, lb1, hb1, 0x7362;
mul.rn.bf16x2 $0, t0, $12;
mul.rn.bf16x2 $1, t1, $12;
mul.rn.bf16x2 $2, t2, $12;
mul.rn.bf16x2 $3, t3, $12;
}
"""
_FP4_PAIRS_ASM = gl.constexpr(_LOOKUP_HEAD + """prmt.b32 y0, w4, $4, 0x5140;
prmt.b32 y1, w4, $4, 0x7362;
lop3.b32 hb0, hb0, y0, 0x80808080, 0xF8;
lop3.b32 hb1, hb1, y1, 0x80808080, 0xF8;
""" + _LOOKUP_TAIL)

# NOTES (decode, quad-ordered words: weight_layout.to_quad moves the signs): the magnitudes stay in the
# nibbles, but the sign of value j (nibble j, j < 4) sits at bit 8j + 7 and that of value 4 + j at bit 8j + 3,
# so the signs merge into the high-byte lookups straight from the word (hb0) and from the word << 4 (hb1):
# per word 2 prmt fewer than _FP4_PAIRS_ASM on the ALU pipe, which bounds the decode loop (ncu on H100: ALU
# pipe 80% busy, benchmarks/NOTES.md "v10"); ptxas issues the shift on the FMA pipe (IMAD.SHL) here.
_FP4_PAIRS_SIGNED_ASM = gl.constexpr(_LOOKUP_HEAD + """lop3.b32 hb0, hb0, $4, 0x80808080, 0xF8;
lop3.b32 hb1, hb1, w4, 0x80808080, 0xF8;
""" + _LOOKUP_TAIL)

# NOTES (decode, "arith" quad words: weight_layout.WORD_BITS["arith"], scales <= 128): no lookup at all. The bf16
# with bits n << 6 (n = the 3 magnitude bits e1 e0 m) is exactly E2M1(n) x 2^-126 (n = 1: the subnormal 2^-127),
# so a code's bf16 is its sign at bit 15 and n at bits 6..8 (M = 0x81C081C0 for a register's two codes), times
# 2^(s-1) (the scale pair of _SCALE_WORD_ARITH_ASM; exact: a power of two, results down to 2^-128 are bf16
# subnormals). The layout puts register 0 at M, register 1 at M >> 4, register 2 at M rotated right by 10 and
# register 3 at the bits left: M's bits 6, 7, 15, 22, 23, 31 six places lower, 8 and 24 two places higher. Per word:
# 5 LOP3 + 2 SHF (ALU pipe), 2 shifts left (IMAD.SHL) and 4 HMUL2 (FMA pipe) = 13 instructions (the layout of
# session 8: 15, 8 of them on the ALU pipe; NOTES "v23"). No 32-bit layout does it with one shift per register: the
# 4 registers' bit sets would tile the word by translates of M, and none do (checked exhaustively, rotations too).
# Two words per call ($8 -> $0..$3, $16 -> $4..$7; `pack=16`: a thread's groups r, r + 1 of a row): word A is
# scaled by the low half of its scale pair ($24), word B by the high half of its own ($32) — ptxas folds the half
# into HMUL2's operand (.H0_H0 / .H1_H1), so one scale word carries two groups (_scale_pairs).
_ARITH_WORD = """and.b32 t, {w}, 0x81C081C0;
mul.rn.bf16x2 {o0}, t, {p};
shl.b32 t, {w}, 4;
and.b32 t, t, 0x81C081C0;
mul.rn.bf16x2 {o1}, t, {p};
shf.l.wrap.b32 t, {w}, {w}, 10;
and.b32 t, t, 0x81C081C0;
mul.rn.bf16x2 {o2}, t, {p};
shr.b32 a, {w}, 2;
and.b32 a, a, 0x01000100;
shl.b32 t, {w}, 6;
lop3.b32 t, t, a, 0x80C080C0, 0xEC;
mul.rn.bf16x2 {o3}, t, {p};
"""
_FP4_PAIRS_ARITH_ASM = gl.constexpr("""
{
.reg .b32 a, t, pa, pb;
.reg .b16 sa, sb, sx, sy;
mov.b32 {sa, sx}, $24;
mov.b32 {sy, sb}, $32;
mov.b32 pa, {sa, sa};
mov.b32 pb, {sb, sb};
""" + _ARITH_WORD.format(w="$8", p="pa", o0="$0", o1="$1", o2="$2", o3="$3")
    + _ARITH_WORD.format(w="$16", p="pb", o0="$4", o1="$5", o2="$6", o3="$7") + "}\n")

# NOTES (scales): UE8M0 byte s -> bf16x2 (2^(s-127), 2^(s-127)) = bits s << 7 in each half, s = 0 -> the
# subnormal 0x0040 (2^-127) as in numerics. From a word of 4 scale bytes (SCALE_WORDS, one 32-bit load
# per row and K step): $2 = selector putting byte r at bytes 0 and 2 (s in each half), then << 7 (ptxas: IMAD.SHL,
# the FMA pipe, not the busy ALU pipe). From one byte (unaligned scale rows): shift, then duplicate the half.
_SCALE_WORD_ASM = gl.constexpr("""
{
.reg .b32 t, lo;
mov.b32 lo, 0x00400040;
prmt.b32 t, $1, 0, $2;
shl.b32 t, t, 7;
max.u16x2 $0, t, lo;
}
""")
# The arithmetic decode's scale pair: 2^(s-1) = bf16 bits (s + 126) << 7 (s <= 128: normal; s = 0 needs no special
# case), of the bytes $2 selects into bytes 0 and 2 (_scale_pairs: one group in both halves, or two groups).
_SCALE_WORD_ARITH_ASM = gl.constexpr("""
{
.reg .b32 t;
prmt.b32 t, $1, 0, $2;
mad.lo.u32 $0, t, 128, 0x3F003F00;
}
""")
_SCALE_BYTE_ARITH_ASM = gl.constexpr("""
{
.reg .b32 t;
mad.lo.u32 t, $1, 128, 0x3F00;
prmt.b32 $0, t, t, 0x1010;
}
""")
_SCALE_BYTE_ASM = gl.constexpr("""
{
.reg .b32 t;
shl.b32 t, $1, 7;
max.u32 t, t, 0x40;
prmt.b32 $0, t, t, 0x1010;
}
""")

# NOTES (quad exchange): a lane loads 16 contiguous code bytes of a row (w0..w3 = bytes 16t + 4i..)
# but its A fragment needs bytes j = t (mod 4) of every group. Round x (1..3): the lane builds, for
# its partner lane ^ x, the word of byte (partner % 4) of w0..w3 (selectors $8..$11, precomputed) and
# swaps it with a butterfly shuffle, receiving group t ^ x; two conditional swaps (by the bits of t)
# then put group k in output k for every lane.
_QUAD_EXCHANGE_ASM = gl.constexpr("""
{
.reg .b32 a, b, v0, v1, v2, v3, u0, u1, u2, u3, q;
.reg .pred p0, p1;
prmt.b32 a, $4, $5, $8;
prmt.b32 b, $6, $7, $8;
prmt.b32 v0, a, b, 0x5410;
prmt.b32 a, $4, $5, $9;
prmt.b32 b, $6, $7, $9;
prmt.b32 v1, a, b, 0x5410;
shfl.sync.bfly.b32 v1, v1, 1, 0x1f, 0xffffffff;
prmt.b32 a, $4, $5, $10;
prmt.b32 b, $6, $7, $10;
prmt.b32 v2, a, b, 0x5410;
shfl.sync.bfly.b32 v2, v2, 2, 0x1f, 0xffffffff;
prmt.b32 a, $4, $5, $11;
prmt.b32 b, $6, $7, $11;
prmt.b32 v3, a, b, 0x5410;
shfl.sync.bfly.b32 v3, v3, 3, 0x1f, 0xffffffff;
and.b32 q, $8, 1;
setp.ne.u32 p0, q, 0;
and.b32 q, $8, 2;
setp.ne.u32 p1, q, 0;
selp.b32 u0, v1, v0, p0;
selp.b32 u1, v0, v1, p0;
selp.b32 u2, v3, v2, p0;
selp.b32 u3, v2, v3, p0;
selp.b32 $0, u2, u0, p1;
selp.b32 $1, u3, u1, p1;
selp.b32 $2, u0, u2, p1;
selp.b32 $3, u1, u3, p1;
}
""")


@gluon.constexpr_function
def _half_rows(block_a, num_warps):
    """Whether an A tile of `block_a` weight rows is a half tile: 8 rows per warp, each warp's m16 slice of the
    wgmma holding its 8 weight rows and 8 rows of zeros (see _decode_a). NOTES: a thread then decodes one row
    instead of two, so a K step is half the decode work per thread, and twice as many programs cover the same
    weights; the wgmma is the same instruction (64 rows per warpgroup), so every real row's sums are the
    same bits. Meant for grids of few programs per SM (T = 1); measured, a step got no shorter (its fixed work,
    not the decode, sets it at T = 1) and only one pick took it (benchmarks/NOTES.md "v24")."""
    return block_a == configs.HALF_TILE_ROWS_PER_WARP * num_warps


@gluon.constexpr_function
def _mma_rows(block_a, num_warps):
    """Rows of the wgmma accumulator for an A tile of `block_a` weight rows (a half tile: twice as many)."""
    return 2 * block_a if _half_rows(block_a, num_warps) else block_a


@gluon.constexpr_function
def _word_layout(block_a, num_warps):
    """[BLOCK_A, 16 words, 8 values] of one K step: threads = the wgmma A fragment's (rows 16w + g, +8,
    + 16 * num_warps; t = lane % 4), lane t holding words col = 4t + r (r = 0..3: 16 contiguous bytes as
    loaded; after the exchange, word r is group r's bytes j = 16r + t + 4q), registers: the 8 values of
    a word first. With 8 warps the second warpgroup holds rows 64..127 (its own m64 wgmmas).
    A half tile (_half_rows): row 8w + g is the A fragment's row 16w + g, the fragment's rows 16w + 8 + g are zeros."""
    span = 16 * num_warps
    if _half_rows(block_a, num_warps):
        rows = []
        warps = [[8 * 2 ** i, 0, 0] for i in range(num_warps.bit_length() - 1)]
    else:
        rows = [[8, 0, 0]] + [[span * 2 ** i, 0, 0] for i in range((block_a // span).bit_length() - 1)]
        warps = [[16 * 2 ** i, 0, 0] for i in range(num_warps.bit_length() - 1)]
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 0, 1], [0, 0, 2], [0, 0, 4], [0, 1, 0], [0, 2, 0]] + rows,
        lane_bases=[[0, 4, 0], [0, 8, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]],
        warp_bases=warps, block_bases=[], shape=[block_a, 16, 8])


@gluon.jit
def _add(a, b):
    return a + b


# NOTES (programmatic dependent launch, kernels/pdl.py): GEMM2 launched with `launch_pdl` may start while GEMM1 (the
# previous kernel on the stream) still runs, once every GEMM1 program has executed `griddepcontrol.launch_dependents`;
# its programs find their tile, issue their first weight-code loads and only then wait (`griddepcontrol.wait`: GEMM1
# complete and its writes visible) before the first read of GEMM1's output, and release their own successor after
# that wait. GEMM1 does the same behind the MXFP8 -> bf16 kernel (GDC_EARLY). Without the launch attribute both
# instructions are no-ops.
@gluon.jit
def _gdc_wait():
    gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _gdc_launch_dependents():
    gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32, is_pure=False,
                              pack=1)


# NOTES (early GEMM2, RoutingPlan.expert_rows_done): GEMM2 launched with `launch_pdl` starts once every GEMM1 program
# has started, i.e. during GEMM1's last wave, whose programs drain with the read rate falling (gpt-oss T = 8: GEMM2's
# first program at 106 µs, GEMM1's end at 115 µs, benchmarks/NOTES.md "v26"). Instead of waiting for all of GEMM1, a
# GEMM2 program waits until its expert's rows are complete: each GEMM1 program adds its tile's rows to the expert's
# counter (release) once per channel block it stored, and GEMM2 polls it (acquire) for count x GEMM1's channel blocks.
# No deadlock: every GEMM1 program is resident or done before the first GEMM2 program starts. A GEMM2 program still
# waits for GEMM1's completion before it exits (so GEMM2's completion implies GEMM1's), and after SPIN_LIMIT polls
# falls back to that wait (correct whatever the counters say). Its dependents (the combine) are released after its
# tile's rows are complete: the combine reads nothing GEMM1 writes.
SPIN_LIMIT = gl.constexpr(1 << 20)


@gluon.jit
def _rows_done(done_ptr, expert, rows):
    """GEMM1: one channel block of this program's act rows is stored; add the rows to the expert's counter."""
    gl.thread_barrier()         # every warp's stores issued before the release
    gl.atomic_add(done_ptr + expert, rows, sem="release", scope="gpu")


@gluon.jit
def _previous_done(ready):
    """Before the first activation load of a programmatic dependent launch: wait for the previous kernel (ready None),
    or (early GEMM2, ready = (counter pointer, rows)) until the expert's counter reaches `rows` (see the NOTES above).
    NOTES: an atomic add of 0 with acquire semantics compiles to one thread's `ld.global.gpu.acquire`."""
    if ready is None:
        _gdc_wait()
    else:
        done = gl.atomic_add(ready[0], 0, sem="acquire", scope="gpu")
        polls = 0
        while (done < ready[1]) & (polls < SPIN_LIMIT):
            done = gl.atomic_add(ready[0], 0, sem="acquire", scope="gpu")
            polls += 1
        if done < ready[1]:
            _gdc_wait()
        gl.thread_barrier()     # the polling thread's acquire before every warp's activation loads


# K loop shapes (GemmConfig.overlap / prefetch -> K_LOOP): one step per iteration with the next step's codes in
# flight (PLAIN); decode while the previous wgmma runs (OVERLAP, _overlap_step); two steps per iteration with
# the codes two steps ahead (AHEAD2, _ahead2_step).
K_LOOP_PLAIN = gl.constexpr(0)
K_LOOP_OVERLAP = gl.constexpr(1)
K_LOOP_AHEAD2 = gl.constexpr(2)
# K_LOOP >= K_LOOP_RING: the codes and scale words of K_LOOP steps ahead in flight through a shared-memory ring
# (cp.async; each thread reads back only what it copied), 4-warp tiles (_wgmma_gemm_ring); K_LOOP_RING_OVERLAP +
# depth: the same ring, each step decoded while the previous step's wgmma runs (two A operands, as OVERLAP).
K_LOOP_RING = gl.constexpr(3)
K_LOOP_RING_OVERLAP = gl.constexpr(32)
# GEMM1's place in the programmatic dependent launch chain (kernels/pdl.py GEMM1_*)
GDC_PLAIN = gl.constexpr(pdl.GEMM1_PLAIN)
GDC_WAIT_FIRST = gl.constexpr(pdl.GEMM1_WAIT_FIRST)
GDC_EARLY = gl.constexpr(pdl.GEMM1_EARLY)

# Tile lists over the expert-sorted rows (SPLIT): every row in BLOCK_M tiles (ALL), or two launches:
# FULL (BLOCK_M = FULL_M) covers each expert's rows in FULL_M tiles except a remainder of at most
# TAIL_M rows (count % FULL_M, when it is that small), which TAIL (BLOCK_M = TAIL_M) covers in one tile.
# NOTES: at ~256 rows per expert (dsv3 prefill), 256-row tiles alone compute ~1.5x the real rows (half
# the experts spill a few rows into a second, nearly empty tile); the tail tile costs one weight pass.
SPLIT_ALL = gl.constexpr(0)
SPLIT_FULL = gl.constexpr(1)
SPLIT_TAIL = gl.constexpr(2)


@gluon.jit
def _tiles_per_expert(offsets_ptr, num_local_experts, BLOCK_M: gl.constexpr, E_PAD: gl.constexpr,
                      SPLIT: gl.constexpr, FULL_M: gl.constexpr, TAIL_M: gl.constexpr):
    """Row range and tile count of each local expert's tiles (grouped_gemm.tile_of_program, Gluon layouts)."""
    experts = gl.arange(0, E_PAD, layout=gl.BlockedLayout([1], [32], [gl.num_warps()], [0]))
    real = experts < num_local_experts
    lo = gl.load(offsets_ptr + experts, mask=real, other=0)
    hi = gl.load(offsets_ptr + experts + 1, mask=real, other=0)
    if SPLIT != SPLIT_ALL:
        rem = (hi - lo) % FULL_M
        tail = gl.where(rem <= TAIL_M, rem, 0)
        if SPLIT == SPLIT_FULL:
            hi = hi - tail
        else:
            lo = hi - tail
    return experts, lo, hi, (hi - lo + BLOCK_M - 1) // BLOCK_M


@gluon.jit
def num_tiles(offsets_ptr, num_local_experts, BLOCK_M: gl.constexpr, E_PAD: gl.constexpr, SPLIT: gl.constexpr,
              FULL_M: gl.constexpr, TAIL_M: gl.constexpr):
    experts, lo, hi, ntiles = _tiles_per_expert(offsets_ptr, num_local_experts, BLOCK_M, E_PAD, SPLIT, FULL_M, TAIL_M)
    return gl.sum(ntiles, axis=0)


def packing_unit(e_pad: int) -> int:
    """tile_of_program's int32 packing: expert count (<= E_PAD) * unit + tile count (< unit) < 2^31."""
    return (1 << 30) // e_pad


@gluon.jit
def tile_of_program(offsets_ptr, pid, num_local_experts, BLOCK_M: gl.constexpr, E_PAD: gl.constexpr,
                    SPLIT: gl.constexpr, FULL_M: gl.constexpr, TAIL_M: gl.constexpr):
    """Program id -> (expert, first row, end row, is_real) on the ragged tile list.
    NOTES: the experts before this tile's are exactly those whose inclusive tile count is <= pid: their
    number (the expert) and their tiles (its first tile) come out of ONE cross-warp sum, packed in an int32
    (the launchers check tiles < packing_unit(E_PAD)); with the row range that is 4 reductions instead of 6
    (each costs shared memory and 2-3 CTA barriers, once per tile; sm_90 SASS: registers equal or fewer)."""
    experts, lo, hi, ntiles = _tiles_per_expert(offsets_ptr, num_local_experts, BLOCK_M, E_PAD, SPLIT, FULL_M, TAIL_M)
    cum = gl.associative_scan(ntiles, 0, _add)
    UNIT: gl.constexpr = (1 << 30) // E_PAD                   # = packing_unit(E_PAD): no int32 overflow
    packed = gl.sum(gl.where(cum <= pid, ntiles + UNIT, 0), axis=0)
    expert = packed // UNIT
    first_tile = packed % UNIT
    real = expert < num_local_experts           # past the last tile every expert (E_PAD of them) is counted
    sel = experts == expert
    row_start = gl.sum(gl.where(sel, lo, 0), axis=0) + (pid - first_tile) * BLOCK_M
    return expert, row_start, gl.sum(gl.where(sel, hi, 0), axis=0), real


# NOTES: th0 / tl0 of the lookup (FP4_MAGNITUDE_LOOKUP_PTX) are a PRMT's register operand (th1 / tl1 fit
# the immediate slot). As PTX immediates ptxas re-materializes them from a uniform register before every
# lookup (sm_90 SASS, gpt-oss GEMM1 decode tile: 34 of 324 instructions per K step); loaded from memory
# per thread they stay in two registers for the whole loop.
FP4_LUT_WORDS = (0x3F3F3F00, 0xC0800000 - (1 << 32))   # (th0, tl0) as int32


@gluon.jit
def _lookup_tables(lut_ptr, BLOCK_A: gl.constexpr, layout: gl.constexpr):
    """(th0, tl0) per row of the A tile. NOTES: the addresses depend on the lane on purpose — loaded from
    one uniform address, ptxas moved the value into a uniform register and copied it back as before."""
    r = gl.arange(0, BLOCK_A, layout=layout) % 8
    return gl.load(lut_ptr + r), gl.load(lut_ptr + 8 + r)


@gluon.jit
def _decode_a(words, scales, lut, BLOCK_A: gl.constexpr, WORD3: gl.constexpr, A_LAYOUT: gl.constexpr,
              SIGNED: gl.constexpr):
    """Exchanged code words + scale bytes (int32 [BLOCK_A, 16], slice of `_word_layout`) -> exact bf16
    weights [BLOCK_A, 128] in the wgmma A-operand layout (the final conversion moves no data).
    `lut`: the two lookup words that must sit in registers (see `_lookup_tables`). SIGNED: the words are
    a whole K step of quad-ordered weights with WORD_BITS "signed" (1, _FP4_PAIRS_SIGNED_ASM) or "arith" (2,
    _FP4_PAIRS_ARITH_ASM, scales from _scale_pairs(ARITH=True)); 0: canonical words."""
    zeros = gl.zeros([BLOCK_A, 16, 8], gl.int32, WORD3)
    ins = [gl.broadcast(gl.expand_dims(words, 2), zeros)[0], gl.broadcast(gl.expand_dims(scales, 2), zeros)[0]]
    if SIGNED == 2:     # two words per call (see _FP4_PAIRS_ARITH_ASM), no lookup registers
        vals = gl.inline_asm_elementwise(_FP4_PAIRS_ARITH_ASM, "=r," * 7 + "=r" + ",r" * 32, ins, dtype=gl.bfloat16,
                                         is_pure=True, pack=16)
    else:
        ins = ins + [gl.broadcast(gl.expand_dims(gl.expand_dims(lut[0], 1), 2), zeros)[0],
                     gl.broadcast(gl.expand_dims(gl.expand_dims(lut[1], 1), 2), zeros)[0]]
        if SIGNED:
            asm: gl.constexpr = _FP4_PAIRS_SIGNED_ASM
        else:
            asm: gl.constexpr = _FP4_PAIRS_ASM
        vals = gl.inline_asm_elementwise(asm, "=r,=r,=r,=r" + ",r" * 32, ins, dtype=gl.bfloat16, is_pure=True,
                                         pack=8)
    # [rows, col = 4 * t + group, 2 * q + nibble] -> k = 32 * group + 8 * q + 2 * t + nibble
    vals = gl.reshape(gl.permute(gl.reshape(vals, [BLOCK_A, 4, 4, 4, 2]), (0, 2, 3, 1, 4)), [BLOCK_A, BLOCK_K])
    if _half_rows(BLOCK_A, gl.num_warps()):
        # row 8w + g -> fragment row 16w + g; rows 16w + 8 + g are zeros (the register bit the join adds)
        vals = gl.join(vals, gl.zeros_like(vals))
        vals = gl.permute(gl.reshape(vals, [gl.num_warps(), 8, BLOCK_K, 2]), (0, 3, 1, 2))
        vals = gl.reshape(vals, [2 * BLOCK_A, BLOCK_K])
    return gl.convert_layout(vals, A_LAYOUT, assert_trivial=True)


@gluon.jit
def _real_rows(acc, BLOCK_A: gl.constexpr):
    """The accumulator rows of the A tile's weight rows: [BLOCK_A, N] (a half tile drops the fragment's zero rows,
    row 16w + g -> 8w + g; see _decode_a), else `acc` itself."""
    if _half_rows(BLOCK_A, gl.num_warps()):
        acc = gl.permute(gl.reshape(acc, [gl.num_warps(), 2, 8, acc.shape[1]]), (0, 2, 3, 1))
        acc, zero_rows = gl.split(acc)
        acc = gl.reshape(acc, [BLOCK_A, acc.shape[2]])
    return acc


@gluon.jit
def _weight_rows(first, second, limit, BLOCK_A: gl.constexpr, GATE_UP: gl.constexpr, layout: gl.constexpr):
    """Weight row of each A-tile row r and whether it is valid (channel offset < limit).
    Plain: row first + r. GATE_UP (GEMM1): bit 3 of r picks gate (first + c) or up (second + c),
    c = 8 * (r // 16) + r % 8. NOTES: the wgmma accumulator puts rows r and r + 8 in one thread, so
    each thread then holds a channel's gate and up sums side by side (the epilogue needs no shuffle).
    Rows past `limit` read the last valid row (so the K loop's loads need no masks; the epilogues drop them).
    int32: a row offset within one expert (rows * K/8 words) stays far below 2^31 (the launchers check)."""
    r = gl.arange(0, BLOCK_A, layout=layout)
    if GATE_UP:
        c = (r // 16) * 8 + r % 8
        cc = gl.minimum(c, limit - 1)
        rows = gl.where((r // 8) % 2 == 0, first + cc, second + cc)
    else:
        c = r
        rows = first + gl.minimum(c, limit - 1)
    return rows, c < limit


@gluon.jit
def _code_rows(rows_w, stride_ww, k_words, step_words, TILED: gl.constexpr):
    """Word offset of each A-tile row's first code word within the expert: row-major rows, or (TILED,
    weight_layout.to_tiled) the row's place in its 32-row block's chunk of rows of `step_words` words
    (16 for whole K steps, fewer for the partial last one). The step's start is added per load."""
    if TILED:
        return (rows_w // 32) * (32 * k_words) + (rows_w % 32) * step_words
    return rows_w * stride_ww


@gluon.jit
def _load_codes(w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn, k0, k_words, k_groups,
                WORD3: gl.constexpr, K_MASK: gl.constexpr, SCALE_WORDS: gl.constexpr, STEP_MULT: gl.constexpr,
                ROW_MASK: gl.constexpr = True):
    """Issue one K step's loads: lane t's 16 code bytes of each of its rows (int32 words 4t..4t+3; row r's
    step starts at word code_rows[r] + STEP_MULT * k0 / 8, see _code_rows) and the
    scales of the 4 groups (the exchange hands lane t group r's bytes in register r): SCALE_WORDS one
    32-bit word per row (rows padded to 4 bytes, see weight_layout.pad_scale_rows), else 4 bytes.
    K_MASK: the step may be partial (past K: codes 0, scales 127; scale words: see _scale_pairs);
    without it only rows are masked. Not ROW_MASK (and not K_MASK): no masks at all — every row and the
    step must be inside the expert's weights (`rows_ok` unused)."""
    L2: gl.constexpr = gl.SliceLayout(2, WORD3)
    col = gl.arange(0, 16, layout=gl.SliceLayout(0, L2))
    kw = k0 // 8 + col
    kb = k0 // 32 + col % 4
    if K_MASK:
        c_ok = rows_ok[:, None] & (kw < k_words)[None, :]
        s_ok = rows_ok[:, None] & (kb < k_groups)[None, :]
    elif ROW_MASK:
        c_ok = rows_ok[:, None]
        s_ok = rows_ok[:, None]
    else:
        c_ok = None
        s_ok = None
    c = gl.load(w_words + (code_rows[:, None] + (k0 // 8) * STEP_MULT) + col[None, :], mask=c_ok,
                other=0 if ROW_MASK or K_MASK else None)
    if SCALE_WORDS:
        s = gl.load((ws_base + rows_w * stride_wsn + k0 // 32).to(gl.pointer_type(gl.int32)),
                    mask=rows_ok if ROW_MASK or K_MASK else None,
                    other=0x7F7F7F7F if ROW_MASK or K_MASK else None)
    else:
        s = gl.load(ws_base + rows_w[:, None] * stride_wsn + kb[None, :], mask=s_ok,
                    other=127 if ROW_MASK or K_MASK else None).to(gl.int32)
    return c, s


@gluon.jit
def _scale_pairs(s, k0, k_groups, WORD3: gl.constexpr, K_MASK: gl.constexpr, SCALE_WORDS: gl.constexpr,
                 ARITH: gl.constexpr = False):
    """Loaded scales -> int32 [BLOCK_A, 16] bf16x2 scale of (row, col = 4t + group) (see _SCALE_WORD_ASM);
    ARITH: 2^(s-1) for the arithmetic decode (_SCALE_WORD_ARITH_ASM; whole quad steps only): from scale words,
    col 4t + r holds groups 2j and 2j + 1 (j = r // 2) in its low and high half; from bytes its own group in both.
    K_MASK with scale words: groups past K read the row's padding; 1.0 there whatever it holds (the codes
    are 0, and 0 x 2^128 would be NaN)."""
    col = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, WORD3)))
    if SCALE_WORDS:
        if ARITH:       # groups (2j, 2j + 1) in the two halves (_FP4_PAIRS_ARITH_ASM takes one half per word)
            sel = (col % 4) // 2 * 0x0202 + 0x4140
        else:
            sel = (col % 4) * 0x0101 + 0x4040
        words, sel = gl.broadcast(gl.expand_dims(s, 1), sel[None, :])
        asm: gl.constexpr = _SCALE_WORD_ARITH_ASM if ARITH else _SCALE_WORD_ASM
        pairs = gl.inline_asm_elementwise(asm, "=r,r,r", [words, sel], dtype=gl.int32, is_pure=True, pack=1)
        if K_MASK:
            pairs = gl.where((k0 // 32 + col % 4 < k_groups)[None, :], pairs, 0x3F803F80)
    else:
        asm: gl.constexpr = _SCALE_BYTE_ARITH_ASM if ARITH else _SCALE_BYTE_ASM
        pairs = gl.inline_asm_elementwise(asm, "=r,r", [s], dtype=gl.int32, is_pure=True, pack=1)
    return pairs


@gluon.jit
def _exchange(c, WORD3: gl.constexpr, QUAD: gl.constexpr):
    """Loaded words -> the words of lane t's bytes, group r in register r (see _QUAD_EXCHANGE_ASM; with
    QUAD-ordered weights they were loaded that way). NOTES: only here are the loaded registers first
    read, so the loads issued one step earlier are waited for as late as possible."""
    if QUAD:
        return c
    col = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, WORD3)))
    p = (col // 4) ^ (col % 4)                                    # round r = col % 4: partner lane t ^ r
    sel = gl.broadcast(c, ((p + 4) * 16 + p)[None, :])[1]        # prmt selector: byte p of two words
    return gl.inline_asm_elementwise(_QUAD_EXCHANGE_ASM, "=r,=r,=r,=r,r,r,r,r,r,r,r,r", [c, sel],
                                     dtype=gl.int32, is_pure=False, pack=4)


@gluon.jit
def _next_a(acc, c, sc, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn, i, num_full, k_words,
            k_groups, BLOCK_A: gl.constexpr, WORD3: gl.constexpr, A_LAYOUT: gl.constexpr, QUAD: gl.constexpr,
            K_MASK: gl.constexpr, SCALE_WORDS: gl.constexpr, STEP_MULT: gl.constexpr, OVERLAP: gl.constexpr,
            LEAN: gl.constexpr):
    """K step i's A operand from its loaded codes (c, sc); issues step i+1's code loads, returned for the next
    call. LEAN (4-warp tiles): unmasked loads, of the last whole step again when i+1 is not one (see _wgmma_gemm);
    else masked ones (rows_ok, K_MASK: k < K), nothing past the last whole step. NOTES: the next step's
    codes are loaded first, so their latency hides behind this step's decode. Unless OVERLAP, the wgmma of
    step i-1 is waited for *before* decoding: it reads its A operand from registers until it completes, and
    ptxas reuses those registers for the next decode (measured: wrong results when the decode ran first).
    OVERLAP: the caller keeps step i-1's operand alive past its wgmma (see _overlap_step).
    `acc` may be a pair (a three-quarter body's two accumulators): both are waited for."""
    if LEAN:
        c_next, sc_next = _load_codes(w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn,
                                      gl.minimum(i + 1, num_full - 1) * BLOCK_K, k_words, k_groups, WORD3, False,
                                      SCALE_WORDS, STEP_MULT, False)
    else:
        c_next, sc_next = _load_codes(w_words, ws_base, code_rows, rows_w, rows_ok & (i + 1 < num_full), stride_wsn,
                                      (i + 1) * BLOCK_K, k_words, k_groups, WORD3, K_MASK, SCALE_WORDS, STEP_MULT)
    words = _exchange(c, WORD3, QUAD)
    pairs = _scale_pairs(sc, i * BLOCK_K, k_groups, WORD3, False, SCALE_WORDS, QUAD == 2)
    if not OVERLAP:
        acc = _mma_wait_all(acc)
    a = _decode_a(words, pairs, lut, BLOCK_A, WORD3, A_LAYOUT, QUAD)
    return acc, a, c_next, sc_next


@gluon.jit
def _mma_wait_all(acc):
    """Wait for every wgmma in flight; `acc` is one accumulator or a pair (returned the same way)."""
    if isinstance(acc, gl.tuple):
        acc0, acc1 = warpgroup_mma_wait(num_outstanding=0, deps=(acc[0], acc[1]))
        out = (acc0, acc1)
    else:
        out = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    return out


@gluon.jit
def _mma_parts(a, b_smem, b2_smem, slot, acc):
    """The K step's wgmmas on A operand `a` and activation ring slot `slot`: one token part (b2_smem None, `acc` one
    accumulator) or two (`acc` a pair): the same k16 instructions per token column either way, so the same bits."""
    if b2_smem is None:
        out = warpgroup_mma(a, b_smem.index(slot).permute((1, 0)), acc, is_async=True)
    else:
        acc0 = warpgroup_mma(a, b_smem.index(slot).permute((1, 0)), acc[0], is_async=True)
        acc1 = warpgroup_mma(a, b2_smem.index(slot).permute((1, 0)), acc[1], is_async=True)
        out = (acc0, acc1)
    return out


@gluon.jit
def _issue_b(b_smem, b_base, bk, b_ok, step, K_DIM, STAGES: gl.constexpr, COMMIT: gl.constexpr = True):
    """cp.async the activation tile of K step `step` into ring slot step % STAGES (zeros past K). COMMIT: close the
    cp.async group (a three-quarter body's two token parts make one group per step)."""
    kk = step * BLOCK_K + bk
    async_copy.async_copy_global_to_shared(b_smem.index(step % STAGES), b_base + kk[None, :],
                                           mask=b_ok[:, None] & (kk < K_DIM)[None, :])
    if COMMIT:
        async_copy.commit_group()


@gluon.jit
def _issue_b_parts(b, b2, step, K_DIM, STAGES: gl.constexpr):
    """_issue_b for a body of one token part (b2 None) or two (b, b2: (smem, base, bk, ok) each) in one group."""
    if b2 is None:
        _issue_b(b[0], b[1], b[2], b[3], step, K_DIM, STAGES, True)
    else:
        _issue_b(b[0], b[1], b[2], b[3], step, K_DIM, STAGES, False)
        _issue_b(b2[0], b2[1], b2[2], b2[3], step, K_DIM, STAGES)


@gluon.jit
def _b_ready(AHEAD: gl.constexpr):
    """The oldest of the AHEAD outstanding activation tiles has landed and is visible to the wgmma (async
    proxy); the barrier also orders every warpgroup's earlier wgmma waits before the next ring write."""
    async_copy.wait_group(AHEAD - 1)
    gl.thread_barrier()
    fence_async_shared()


# NOTES (GemmConfig.tma_b): the activation ring filled by TMA instead of every thread's cp.async. The cp.async ring
# needs a CTA-wide barrier per K step (each thread waits for its own copies only), which holds an 8-warp tile's two
# warpgroups in lockstep: both decode, then both wgmmas run, and the tensor pipe idles during the decode (ncu, dsv3
# T = 8192 prefill tiles: barrier the first stall, tensor pipe ~50%). TMA copies complete on an mbarrier that every
# thread waits for, so the warpgroups need no barrier for the data; the slot a TMA overwrites was read by the wgmmas
# two steps back (the ring keeps STAGES - 2 = 1 tile ahead), and the second warpgroup says it is done with them through
# named barrier 1 / 2 (by step parity): it arrives (bar.arrive, no wait) after its wait for step i - 1's wgmma and
# step i's data; the first warpgroup, whose elected thread issues the TMA, syncs on it before the copy. A warpgroup is
# never more than one step ahead of the data the other one issues, so a barrier never holds two arrivals of its parity.
@gluon.jit
def _ring_marker():
    """Marks a kernel with the TMA ring for ptx_patch (a PTX comment, no instruction)."""
    gl.inline_asm_elementwise("// " + ptx_patch.RING_MARKER + " $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _wg_release(step):
    """Second warpgroup (threads 128-255): done with the wgmmas of step - 1 (named barrier 1 + step % 2, no wait)."""
    gl.inline_asm_elementwise("{ .reg .pred p; .reg .u32 t; mov.u32 t, %tid.x; setp.ge.u32 p, t, 128; "
                              "@p bar.arrive $1, 256; }", "=r,r", [1 + step % 2], dtype=gl.int32, is_pure=False,
                              pack=1)


@gluon.jit
def _wg_acquire(step):
    """First warpgroup (threads 0-127): wait until the second one released step `step` (see _wg_release)."""
    gl.inline_asm_elementwise("{ .reg .pred p; .reg .u32 t; mov.u32 t, %tid.x; setp.lt.u32 p, t, 128; "
                              "@p bar.sync $1, 256; }", "=r,r", [1 + step % 2], dtype=gl.int32, is_pure=False,
                              pack=1)


@gluon.jit
def _issue_b_tma(b_tma, full, b_smem, step, n_steps, STAGES: gl.constexpr):
    """TMA the activation tile of K step `step` (b_tma = (descriptor, first row); zeros past K and past the tensor's
    rows) into ring slot step % STAGES, completing on full[slot]; nothing past the last step."""
    slot = step % STAGES
    ok = step < n_steps
    mbarrier.expect(full.index(slot), b_tma[0].block_type.nbytes, pred=ok)
    tma.async_copy_global_to_shared(b_tma[0], [b_tma[1], step * BLOCK_K], full.index(slot), b_smem.index(slot),
                                    pred=ok)


@gluon.jit
def _tma_step(a, acc, b_tma, full, b_smem, i, n_steps, STAGES: gl.constexpr):
    """K step i of the TMA ring (after step i's decode and the wait for step i - 1's wgmma): its data, the second
    warpgroup's release, the wgmma, and the copy of step i + STAGES - 2 into the slot of step i - 2."""
    slot = i % STAGES
    mbarrier.wait(full.index(slot), (i // STAGES) & 1)
    if gl.num_warps() == 8:
        if i >= 1:
            _wg_release(i)
    acc = warpgroup_mma(a, b_smem.index(slot).permute((1, 0)), acc, is_async=True)
    if gl.num_warps() == 8:
        if i >= 2:
            _wg_acquire(i - 1)
    _issue_b_tma(b_tma, full, b_smem, i + STAGES - 2, n_steps, STAGES)
    return acc


@gluon.jit
def _overlap_step(acc, a_prev, c, sc, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn, i, num_full,
                  k_words, k_groups, b_smem, b_base, bk, b_ok, K_DIM, BLOCK_A: gl.constexpr, WORD3: gl.constexpr,
                  A_LAYOUT: gl.constexpr, QUAD: gl.constexpr, K_MASK: gl.constexpr, SCALE_WORDS: gl.constexpr,
                  STEP_MULT: gl.constexpr, STAGES: gl.constexpr, AHEAD: gl.constexpr):
    """K_LOOP_OVERLAP, K step i: decode while step i-1's wgmma runs, issue step i's wgmma, then wait for step i-1's
    only. NOTES: `a_prev` (step i-1's A operand) is a dependency of that wait, so ptxas keeps its registers
    until the wgmma reading them is done; the caller alternates two operands (a 2x unrolled loop), so each
    operand's registers are rewritten only after its own wgmma retired (a rolled loop would read one fixed
    register set and copy into it while in flight). The ring is one slot shallower: slot i-1 may still be
    read, so the tile issued here goes to slot i-2 (retired by every warpgroup before the barrier)."""
    acc, a, c, sc = _next_a(acc, c, sc, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn, i, num_full,
                            k_words, k_groups, BLOCK_A, WORD3, A_LAYOUT, QUAD, K_MASK, SCALE_WORDS, STEP_MULT, True,
                            gl.num_warps() == 4)
    _b_ready(AHEAD)
    _issue_b(b_smem, b_base, bk, b_ok, i + AHEAD, K_DIM, STAGES)
    acc = warpgroup_mma(a, b_smem.index(i % STAGES).permute((1, 0)), acc, is_async=True)
    acc, a_prev = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_prev))
    return acc, a, c, sc


@gluon.jit
def _ahead2_step(acc, c, sc, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn, i, num_full, k_words,
                 k_groups, b_smem, b_base, bk, b_ok, K_DIM, BLOCK_A: gl.constexpr, WORD3: gl.constexpr,
                 A_LAYOUT: gl.constexpr, QUAD: gl.constexpr, K_MASK: gl.constexpr, SCALE_WORDS: gl.constexpr,
                 STEP_MULT: gl.constexpr, STAGES: gl.constexpr, AHEAD: gl.constexpr):
    """K_LOOP_AHEAD2, K step i from its codes (c, sc): decode, then load step i + 2's codes into the same
    values (returned), then the step's wgmma. 4-warp tiles (LEAN) load unmasked, clamped to the last whole
    step; else masked past it (see _next_a)."""
    words = _exchange(c, WORD3, QUAD)
    pairs = _scale_pairs(sc, i * BLOCK_K, k_groups, WORD3, False, SCALE_WORDS, QUAD == 2)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    a = _decode_a(words, pairs, lut, BLOCK_A, WORD3, A_LAYOUT, QUAD)
    if gl.num_warps() == 4:
        c, sc = _load_codes(w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn,
                            gl.minimum(i + 2, num_full - 1) * BLOCK_K, k_words, k_groups, WORD3, False, SCALE_WORDS,
                            STEP_MULT, False)
    else:
        c, sc = _load_codes(w_words, ws_base, code_rows, rows_w, rows_ok & (i + 2 < num_full), stride_wsn,
                            (i + 2) * BLOCK_K, k_words, k_groups, WORD3, K_MASK, SCALE_WORDS, STEP_MULT)
    _b_ready(AHEAD)
    _issue_b(b_smem, b_base, bk, b_ok, i + AHEAD, K_DIM, STAGES)
    acc = warpgroup_mma(a, b_smem.index(i % STAGES).permute((1, 0)), acc, is_async=True)
    return acc, c, sc


@gluon.jit
def _wgmma_gemm(b_ptr, b_rows64, b_ok, stride_b, w_words, ws_base, stride_ww, stride_wsn, lut_ptr, first, second, limit,
                K_DIM, k_words, k_groups, BLOCK_A: gl.constexpr, GATE_UP: gl.constexpr, BLOCK_M: gl.constexpr,
                STAGES: gl.constexpr, MMA: gl.constexpr, B_LOAD: gl.constexpr, QUAD: gl.constexpr,
                PARTIAL_K: gl.constexpr, SCALE_WORDS: gl.constexpr, TILED: gl.constexpr, K_LOOP: gl.constexpr,
                GDC_WAIT: gl.constexpr = False, ready=None, b2=None, MMA2: gl.constexpr = None,
                B_LOAD2: gl.constexpr = None, b_tma=None):
    """acc[BLOCK_A, BLOCK_M] = W[rows, :K_DIM] @ B[b_rows, :K_DIM]^T (see _wgmma_gemm_regs; K_LOOP >= K_LOOP_RING:
    _wgmma_gemm_ring). Every K loop issues the same wgmmas in the same order (same bits). GDC_WAIT: wait for the
    previous kernel (see _gdc_wait), or for `ready` (early GEMM2, _previous_done), before the first activation load.
    b2 (plain K loop): a second token part, see _wgmma_gemm_regs; returns the pair of accumulators. b_tma (plain K
    loop, one part): the activation ring filled by TMA, see _wgmma_gemm_regs."""
    if K_LOOP >= K_LOOP_RING:
        acc = _wgmma_gemm_ring(b_ptr, b_rows64, b_ok, stride_b, w_words, ws_base, stride_ww, stride_wsn, lut_ptr, first,
                               second, limit, K_DIM, k_words, k_groups, BLOCK_A, GATE_UP, BLOCK_M, STAGES, MMA, B_LOAD,
                               QUAD, PARTIAL_K, TILED, K_LOOP, GDC_WAIT, ready)
    else:
        if GDC_WAIT:
            _previous_done(ready)
            _gdc_launch_dependents()
        acc = _wgmma_gemm_regs(b_ptr, b_rows64, b_ok, stride_b, w_words, ws_base, stride_ww, stride_wsn, lut_ptr, first,
                               second, limit, K_DIM, k_words, k_groups, BLOCK_A, GATE_UP, BLOCK_M, STAGES, MMA, B_LOAD,
                               QUAD, PARTIAL_K, SCALE_WORDS, TILED, K_LOOP, b2, MMA2, B_LOAD2, b_tma)
    if b2 is not None:
        out = (_real_rows(acc[0], BLOCK_A), _real_rows(acc[1], BLOCK_A))
    else:
        out = _real_rows(acc, BLOCK_A)
    return out


@gluon.jit
def _issue_codes(c_smem, s_smem, w_words, ws_base, code_rows, rows_w, stride_wsn, step, slot, WORD3: gl.constexpr,
                 STEP_MULT: gl.constexpr):
    """cp.async K step `step`'s code words (lane t's 16 bytes of each row, as _load_codes loads them) and the rows'
    scale words into code-ring slot `slot`; no commit (the caller's group). Unmasked: `step` is a whole step and
    every row is inside the expert (rows past the tile's channels read its last valid row, see _weight_rows)."""
    L2: gl.constexpr = gl.SliceLayout(2, WORD3)
    col = gl.arange(0, 16, layout=gl.SliceLayout(0, L2))
    async_copy.async_copy_global_to_shared(
        c_smem.index(slot), w_words + (code_rows[:, None] + (step * (BLOCK_K // 8)) * STEP_MULT) + col[None, :])
    async_copy.async_copy_global_to_shared(
        s_smem.index(slot), (ws_base + rows_w * stride_wsn + step * (BLOCK_K // 32)).to(gl.pointer_type(gl.int32)))


@gluon.jit
def _partial_step_a(acc, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_ww, stride_wsn, num_full, k_words,
                    k_groups, BLOCK_A: gl.constexpr, WORD3: gl.constexpr, A_LAYOUT: gl.constexpr,
                    SCALE_WORDS: gl.constexpr, TILED: gl.constexpr, STEP_MULT: gl.constexpr):
    """PARTIAL_K (K % 128 != 0): the partial last step's A operand (its block is canonical in either byte order; codes
    and scales loaded with k masks, weight_layout keeps that block canonical), after the previous wgmma retired.
    Returns (acc waited for, A operand; `acc` one accumulator or a pair); the caller issues the step's wgmma once its
    activation tile is ready."""
    if TILED:   # the partial step's chunk: rows of k_words - 16 * num_full words
        code_rows = _code_rows(rows_w, stride_ww, k_words, k_words - num_full * (BLOCK_K // 8), TILED)
    c, sc = _load_codes(w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn, num_full * BLOCK_K,
                        k_words, k_groups, WORD3, True, SCALE_WORDS, STEP_MULT)
    words = _exchange(c, WORD3, False)
    pairs = _scale_pairs(sc, num_full * BLOCK_K, k_groups, WORD3, True, SCALE_WORDS)
    acc = _mma_wait_all(acc)
    return acc, _decode_a(words, pairs, lut, BLOCK_A, WORD3, A_LAYOUT, False)


@gluon.jit
def _ring_codes(c_smem, s_smem, i, k_groups, WORD3: gl.constexpr, QUAD: gl.constexpr, DEPTH: gl.constexpr):
    """K step i's exchanged code words and scale pairs from code-ring slot i % DEPTH (see _wgmma_gemm_ring)."""
    L2: gl.constexpr = gl.SliceLayout(2, WORD3)
    async_copy.wait_group(DEPTH - 1)
    c = c_smem.index(i % DEPTH).load(L2)
    sc = s_smem.index(i % DEPTH).load(gl.SliceLayout(1, L2))
    return _exchange(c, WORD3, QUAD), _scale_pairs(sc, i * BLOCK_K, k_groups, WORD3, False, True, QUAD == 2)


@gluon.jit
def _ring_issue(c_smem, s_smem, w_words, ws_base, code_rows, rows_w, stride_wsn, i, last, b_smem, b_base, bk, b_ok,
                K_DIM, WORD3: gl.constexpr, STEP_MULT: gl.constexpr, STAGES: gl.constexpr, AHEAD: gl.constexpr,
                DEPTH: gl.constexpr):
    """Step i's activation tile ready; then one cp.async group: the codes of step i + DEPTH (into the slot step i
    was read from) and the activation tile of step i + AHEAD."""
    _b_ready(AHEAD)
    _issue_codes(c_smem, s_smem, w_words, ws_base, code_rows, rows_w, stride_wsn, gl.minimum(i + DEPTH, last),
                 i % DEPTH, WORD3, STEP_MULT)
    _issue_b(b_smem, b_base, bk, b_ok, i + AHEAD, K_DIM, STAGES)


@gluon.jit
def _ring_overlap_step(acc, a_prev, i, last, c_smem, s_smem, lut, w_words, ws_base, code_rows, rows_w, stride_wsn,
                       k_groups, b_smem, b_base, bk, b_ok, K_DIM, BLOCK_A: gl.constexpr, WORD3: gl.constexpr,
                       A_LAYOUT: gl.constexpr, QUAD: gl.constexpr, STEP_MULT: gl.constexpr, STAGES: gl.constexpr,
                       AHEAD: gl.constexpr, DEPTH: gl.constexpr):
    """K_LOOP_RING_OVERLAP, K step i: decode while step i-1's wgmma (operand `a_prev`) runs, issue step i's wgmma,
    then wait for step i-1's only (see _overlap_step: the caller alternates two operands)."""
    words, pairs = _ring_codes(c_smem, s_smem, i, k_groups, WORD3, QUAD, DEPTH)
    a = _decode_a(words, pairs, lut, BLOCK_A, WORD3, A_LAYOUT, QUAD)
    _ring_issue(c_smem, s_smem, w_words, ws_base, code_rows, rows_w, stride_wsn, i, last, b_smem, b_base, bk, b_ok,
                K_DIM, WORD3, STEP_MULT, STAGES, AHEAD, DEPTH)
    acc = warpgroup_mma(a, b_smem.index(i % STAGES).permute((1, 0)), acc, is_async=True)
    acc, a_prev = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_prev))
    return acc, a


@gluon.jit
def _wgmma_gemm_ring(b_ptr, b_rows64, b_ok, stride_b, w_words, ws_base, stride_ww, stride_wsn, lut_ptr, first, second,
                     limit, K_DIM, k_words, k_groups, BLOCK_A: gl.constexpr, GATE_UP: gl.constexpr,
                     BLOCK_M: gl.constexpr, STAGES: gl.constexpr, MMA: gl.constexpr, B_LOAD: gl.constexpr,
                     QUAD: gl.constexpr, PARTIAL_K: gl.constexpr, TILED: gl.constexpr, K_LOOP: gl.constexpr,
                     GDC_WAIT: gl.constexpr, ready=None):
    """The K loop with the weight codes DEPTH = K_LOOP % K_LOOP_RING_OVERLAP whole steps ahead (4-warp tiles, scale
    words; the plain loop's schedule otherwise); K_LOOP >= K_LOOP_RING_OVERLAP: each step's decode runs while the
    previous step's wgmma does (_ring_overlap_step; the activation ring then keeps STAGES - 2 tiles ahead; ~145
    registers instead of ~70, benchmarks/NOTES.md "v18"). NOTES: at one token (T = 1) a GEMM is 0.5 waves of 4-warp
    programs whose steps wait on their code loads; registers held the codes of at most two steps (prefetch=2), a
    shared-memory ring holds DEPTH.
    Each thread reads back only the bytes it copied, so its own cp.async wait is the only synchronization.
    cp.async groups: the prologue commits codes 0 .. DEPTH-1 one group each, then activation tiles 0 .. AHEAD-1;
    step j commits (activation tile j + AHEAD, codes j + DEPTH) together. Codes of step i are then always DEPTH - 1
    groups behind the newest at the start of step i, activation tile i AHEAD - 1 groups behind at _b_ready.
    NOTES: groups complete in order, so _b_ready's wait for activation tile i also waits for the codes of step
    i - AHEAD + DEPTH (committed with it): the ring hides min(DEPTH, AHEAD) steps of load latency
    (GemmConfig.ring_lookahead), and a ring deeper than AHEAD = STAGES - 1 (- 1 with OVERLAP) only costs shared
    memory. The decode picks pair them (STAGES = DEPTH + 1; H100 ncu, gpt-oss T = 8: long-scoreboard stalls per issue
    1.7 -> 1.1 in GEMM1, 2.6 -> 0.9 in GEMM2; benchmarks/NOTES.md "v22")."""
    DEPTH: gl.constexpr = K_LOOP % K_LOOP_RING_OVERLAP
    OVERLAP: gl.constexpr = K_LOOP >= K_LOOP_RING_OVERLAP
    A_LAYOUT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    WORD3: gl.constexpr = _word_layout(BLOCK_A, gl.num_warps())
    L2: gl.constexpr = gl.SliceLayout(2, WORD3)
    ROWS: gl.constexpr = gl.SliceLayout(1, L2)
    if PARTIAL_K:       # see _wgmma_gemm_regs
        stride_ww = (stride_ww >> 2) << 2
        k_words = (k_words >> 2) << 2
    rows_w, rows_ok = _weight_rows(first, second, limit, BLOCK_A, GATE_UP, ROWS)
    lut = _lookup_tables(lut_ptr, BLOCK_A, ROWS)
    STEP_MULT: gl.constexpr = 32 if TILED else 1
    code_rows = _code_rows(rows_w, stride_ww, k_words, BLOCK_K // 8, TILED)
    C_SMEM: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0])
    c_smem = gl.allocate_shared_memory(gl.int32, [DEPTH, BLOCK_A, 16], C_SMEM)
    S_SMEM: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[0])
    s_smem = gl.allocate_shared_memory(gl.int32, [DEPTH, BLOCK_A], S_SMEM)

    B_SMEM: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_K], gl.bfloat16)
    b_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_M, BLOCK_K], B_SMEM)
    bk = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, B_LOAD))
    b_base = b_ptr + b_rows64[:, None] * stride_b
    num_full = K_DIM // BLOCK_K
    last = gl.maximum(num_full - 1, 0)
    AHEAD: gl.constexpr = STAGES - 1 - OVERLAP     # OVERLAP: slot i - 1 may still be read during step i
    for s in gl.static_range(DEPTH):
        _issue_codes(c_smem, s_smem, w_words, ws_base, code_rows, rows_w, stride_wsn, gl.minimum(s, last), s, WORD3,
                     STEP_MULT)
        async_copy.commit_group()
    if GDC_WAIT:        # the weight codes are in flight; the activations are the previous kernel's output
        _previous_done(ready)
        _gdc_launch_dependents()    # after the wait (kernels/pdl.py's contract)
    for s in gl.static_range(AHEAD):
        _issue_b(b_smem, b_base, bk, b_ok, s, K_DIM, STAGES)
    acc = gl.zeros([_mma_rows(BLOCK_A, gl.num_warps()), BLOCK_M], gl.float32, MMA)
    # NOTES: step 0 is peeled (see _wgmma_gemm_regs: a loop that may run zero times must not define the
    # accumulator outside a wgmma)
    async_copy.wait_group(DEPTH + AHEAD - 1)
    c = c_smem.index(0).load(L2)
    sc = s_smem.index(0).load(ROWS)
    pairs = _scale_pairs(sc, 0, k_groups, WORD3, False, True, QUAD == 2)
    a = _decode_a(_exchange(c, WORD3, QUAD), pairs, lut, BLOCK_A, WORD3, A_LAYOUT, QUAD)
    _b_ready(AHEAD)
    _issue_codes(c_smem, s_smem, w_words, ws_base, code_rows, rows_w, stride_wsn, gl.minimum(DEPTH, last), 0, WORD3,
                 STEP_MULT)
    _issue_b(b_smem, b_base, bk, b_ok, AHEAD, K_DIM, STAGES)
    acc = warpgroup_mma(a, b_smem.index(0).permute((1, 0)), acc, is_async=True)
    if OVERLAP:
        # Steps (i, i + 1) with operands (a_odd, a), as _wgmma_gemm_regs' OVERLAP loop (the wait returns at once)
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
        for i in range(1, num_full - 1, 2):
            acc, a_odd = _ring_overlap_step(acc, a, i, last, c_smem, s_smem, lut, w_words, ws_base, code_rows, rows_w,
                                            stride_wsn, k_groups, b_smem, b_base, bk, b_ok, K_DIM, BLOCK_A, WORD3,
                                            A_LAYOUT, QUAD, STEP_MULT, STAGES, AHEAD, DEPTH)
            acc, a = _ring_overlap_step(acc, a_odd, i + 1, last, c_smem, s_smem, lut, w_words, ws_base, code_rows,
                                        rows_w, stride_wsn, k_groups, b_smem, b_base, bk, b_ok, K_DIM, BLOCK_A, WORD3,
                                        A_LAYOUT, QUAD, STEP_MULT, STAGES, AHEAD, DEPTH)
        if (num_full % 2 == 0) & (num_full > 0):   # one step left: num_full - 1
            acc, a_odd = _ring_overlap_step(acc, a, num_full - 1, last, c_smem, s_smem, lut, w_words, ws_base,
                                            code_rows, rows_w, stride_wsn, k_groups, b_smem, b_base, bk, b_ok, K_DIM,
                                            BLOCK_A, WORD3, A_LAYOUT, QUAD, STEP_MULT, STAGES, AHEAD, DEPTH)
            acc, a_odd = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a_odd))
        else:
            acc, a = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a))
    else:
        for i in range(1, num_full):
            words, pairs = _ring_codes(c_smem, s_smem, i, k_groups, WORD3, QUAD, DEPTH)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
            a = _decode_a(words, pairs, lut, BLOCK_A, WORD3, A_LAYOUT, QUAD)
            _ring_issue(c_smem, s_smem, w_words, ws_base, code_rows, rows_w, stride_wsn, i, last, b_smem, b_base, bk,
                        b_ok, K_DIM, WORD3, STEP_MULT, STAGES, AHEAD, DEPTH)
            acc = warpgroup_mma(a, b_smem.index(i % STAGES).permute((1, 0)), acc, is_async=True)
    if PARTIAL_K:
        if num_full > 0:
            acc, a = _partial_step_a(acc, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_ww, stride_wsn,
                                     num_full, k_words, k_groups, BLOCK_A, WORD3, A_LAYOUT, True, TILED, STEP_MULT)
            async_copy.wait_group(0)      # the last activation tile (the partial step's) and nothing newer matter
            gl.thread_barrier()
            fence_async_shared()
            acc = warpgroup_mma(a, b_smem.index(num_full % STAGES).permute((1, 0)), acc, is_async=True)
            if OVERLAP:     # `acc` left the overlapped loop waited for (a tensor): the same type
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    async_copy.wait_group(0)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    gl.thread_barrier()        # see _wgmma_gemm_regs: the epilogue's scratch may reuse the rings
    return acc


@gluon.jit
def _wgmma_gemm_regs(b_ptr, b_rows64, b_ok, stride_b,               # B: bf16 rows [*, K_DIM], one per token column
                w_words, ws_base, stride_ww, stride_wsn,        # this expert's codes (int32 words) / scales
                lut_ptr,                                        # fp4_lut(): see _lookup_tables
                first, second, limit, K_DIM, k_words, k_groups,  # A rows (see _weight_rows); K, K/8, K/32
                BLOCK_A: gl.constexpr, GATE_UP: gl.constexpr, BLOCK_M: gl.constexpr, STAGES: gl.constexpr,
                MMA: gl.constexpr, B_LOAD: gl.constexpr, QUAD: gl.constexpr,
                PARTIAL_K: gl.constexpr, SCALE_WORDS: gl.constexpr, TILED: gl.constexpr, K_LOOP: gl.constexpr,
                b2=None, MMA2: gl.constexpr = None, B_LOAD2: gl.constexpr = None, b_tma=None):
    """acc[BLOCK_A, BLOCK_M] = W[rows, :K_DIM] @ B[b_rows, :K_DIM]^T: fp32, k16 wgmmas in ascending k.
    b_tma = (descriptor, first row) (plain K loop, one token part, STAGES == 3): B's rows are the BLOCK_M rows from
    that row on, loaded by TMA (see _wg_release); b_rows64 / b_ok are then not read.
    b2 = (rows64, ok) of BLOCK_M / 2 more token columns (a three-quarter body, plain K loop only; layouts MMA2 /
    B_LOAD2): the same A operands also multiply them, into a second accumulator; returns the pair.
    QUAD: the codes are stored in weight_layout's quad order, i.e. already as the exchange delivers them
    (1: WORD_BITS "signed", 2: "arith", see _decode_a).
    PARTIAL_K: K % 128 != 0 (the last K step is partial; its block is canonical in either order).
    SCALE_WORDS: see _load_codes. TILED: the codes in weight_layout.to_tiled's layout (see _code_rows).
    K_LOOP: K_LOOP_PLAIN; K_LOOP_OVERLAP (STAGES >= 3): each step's decode runs while the previous step's
    wgmma does (_overlap_step): a second A operand's registers, one ring slot less; K_LOOP_AHEAD2: codes two
    steps ahead (_ahead2_step). All issue the same wgmmas in the same order (same bits)."""
    A_LAYOUT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    WORD3: gl.constexpr = _word_layout(BLOCK_A, gl.num_warps())
    if PARTIAL_K:
        # NOTES: K % 32 == 0, so a code row is a whole number of 16-byte vectors (stride and K/8 are
        # multiples of 4 words). Said explicitly: a launch specializes only multiples of 16 (K % 128 == 0),
        # and without it K = 2880 (gpt-oss) loads each lane's 16 bytes as four 32-bit loads (sm_90 SASS,
        # GEMM1 8x32: 438 instead of 411 instructions per K step).
        stride_ww = (stride_ww >> 2) << 2
        k_words = (k_words >> 2) << 2
    rows_w, rows_ok = _weight_rows(first, second, limit, BLOCK_A, GATE_UP,
                                   gl.SliceLayout(1, gl.SliceLayout(2, WORD3)))
    lut = _lookup_tables(lut_ptr, BLOCK_A, gl.SliceLayout(1, gl.SliceLayout(2, WORD3)))
    STEP_MULT: gl.constexpr = 32 if TILED else 1
    code_rows = _code_rows(rows_w, stride_ww, k_words, BLOCK_K // 8, TILED)

    B_SMEM: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_K], gl.bfloat16)
    b_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_M, BLOCK_K], B_SMEM)
    bk = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, B_LOAD))
    b_base = b_ptr + b_rows64[:, None] * stride_b
    b1 = (b_smem, b_base, bk, b_ok)
    if b2 is None:
        b2_smem = None
        b2_parts = None
    else:
        B2_SMEM: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M // 2, BLOCK_K], gl.bfloat16)
        b2_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_M // 2, BLOCK_K], B2_SMEM)
        b2_parts = (b2_smem, b_ptr + b2[0][:, None] * stride_b,
                    gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, B_LOAD2)), b2[1])
    num_full = K_DIM // BLOCK_K
    AHEAD: gl.constexpr = STAGES - 1 - (K_LOOP == K_LOOP_OVERLAP)   # activation tiles in flight ahead of the step
    if b_tma is not None:
        n_steps = num_full + PARTIAL_K
        _ring_marker()
        full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(STAGES):
            mbarrier.init(full.index(s), count=1)
        fence_async_shared()
        for s in gl.static_range(STAGES - 2):
            _issue_b_tma(b_tma, full, b_smem, s, n_steps, STAGES)
    else:
        for s in gl.static_range(AHEAD):
            _issue_b_parts(b1, b2_parts, s, K_DIM, STAGES)
    # NOTES: the loop runs the whole steps only; PARTIAL_K (K % 128 != 0): the partial last step is peeled
    # after it, loads its own codes with k masks and runs the exchange (weight_layout keeps that block
    # canonical). With 4 warps the loop's loads have no masks (`_next_a` LEAN): rows past the tile's channels
    # read its last valid row (_weight_rows; the epilogues drop them) and the load after the last whole step
    # re-reads that step: 8-13 instructions per step fewer (3-5%; same H100: dsv3 / qwen3 T=2048 -1..-4%).
    # 8-warp tiles keep the masks: without them the prefill tiles ran 3-4% slower (H100, dsv3 / v4flash
    # T=8192, benchmarks/NOTES.md "v10"; v7 saw ptxas hoist per-row addresses out of such loops), and their
    # k masks (always true there) except with PARTIAL_K (v7, gpt-oss: 362 -> 324 instructions per step).
    LOOP_K_MASK: gl.constexpr = (not PARTIAL_K) or BLOCK_A * 4 > 64 * gl.num_warps()
    c, sc = _load_codes(w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn, 0, k_words, k_groups, WORD3,
                        PARTIAL_K, SCALE_WORDS, STEP_MULT)
    # NOTES: step 0 is peeled (no wgmma to wait for yet): an async wgmma returns an accumulator token
    # that the loop carries, and a loop that may run zero times leaves a path defining the accumulator
    # outside any wgmma, for which ptxas serializes every wgmma of the kernel (C7515).
    c_next, sc_next = _load_codes(w_words, ws_base, code_rows, rows_w, rows_ok & (num_full > 1), stride_wsn, BLOCK_K,
                                  k_words, k_groups, WORD3, False, SCALE_WORDS, STEP_MULT)
    pairs = _scale_pairs(sc, 0, k_groups, WORD3, PARTIAL_K, SCALE_WORDS, QUAD == 2)
    # NOTES: QUAD implies K >= 128 (weight_layout.can_quad; the launchers check), so step 0 is a whole one
    a = _decode_a(_exchange(c, WORD3, QUAD), pairs, lut, BLOCK_A, WORD3, A_LAYOUT, QUAD)
    acc = gl.zeros([_mma_rows(BLOCK_A, gl.num_warps()), BLOCK_M], gl.float32, MMA)
    if b_tma is not None:
        acc = _tma_step(a, acc, b_tma, full, b_smem, 0, n_steps, STAGES)
    else:
        _b_ready(AHEAD)
        _issue_b_parts(b1, b2_parts, AHEAD, K_DIM, STAGES)
        if b2 is not None:
            acc = (acc, gl.zeros([_mma_rows(BLOCK_A, gl.num_warps()), BLOCK_M // 2], gl.float32, MMA2))
        acc = _mma_parts(a, b_smem, b2_smem, 0, acc)
    c = c_next
    sc = sc_next
    if K_LOOP == K_LOOP_OVERLAP:
        # Steps (i, i + 1) with operands (a_odd, a): the loop carries the operand in flight at its end. The
        # wait below returns at once (one wgmma in flight); it makes `acc` the type _overlap_step returns.
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
        for i in range(1, num_full - 1, 2):
            acc, a_odd, c, sc = _overlap_step(acc, a, c, sc, lut, w_words, ws_base, code_rows, rows_w, rows_ok,
                                              stride_wsn, i, num_full, k_words, k_groups, b_smem, b_base, bk, b_ok,
                                              K_DIM, BLOCK_A, WORD3, A_LAYOUT, QUAD, LOOP_K_MASK, SCALE_WORDS,
                                              STEP_MULT, STAGES, AHEAD)
            acc, a, c, sc = _overlap_step(acc, a_odd, c, sc, lut, w_words, ws_base, code_rows, rows_w, rows_ok,
                                          stride_wsn, i + 1, num_full, k_words, k_groups, b_smem, b_base, bk, b_ok,
                                          K_DIM, BLOCK_A, WORD3, A_LAYOUT, QUAD, LOOP_K_MASK, SCALE_WORDS,
                                          STEP_MULT, STAGES, AHEAD)
        if (num_full % 2 == 0) & (num_full > 0):   # one step left: num_full - 1
            acc, a_odd, c, sc = _overlap_step(acc, a, c, sc, lut, w_words, ws_base, code_rows, rows_w, rows_ok,
                                              stride_wsn, num_full - 1, num_full, k_words, k_groups, b_smem, b_base,
                                              bk, b_ok, K_DIM, BLOCK_A, WORD3, A_LAYOUT, QUAD, LOOP_K_MASK,
                                              SCALE_WORDS, STEP_MULT, STAGES, AHEAD)
            acc, a_odd = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a_odd))
        else:
            acc, a = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a))
    elif K_LOOP == K_LOOP_AHEAD2:
        # NOTES: (c, sc) hold step i's codes and (c2, sc2) step i + 1's; each step's load of the codes two steps
        # ahead goes into the registers its decode just read, and the loop body is two steps, so no register
        # is copied. The plain loop's back edge copies the codes loaded in that same step (a rolled loop cannot
        # rename them), and the copy waits for the load: ncu at dsv3 T = 1 puts 30% of GEMM1's stall samples on
        # that move, i.e. the codes were one step ahead however early the load was issued.
        c2, sc2 = _load_codes(w_words, ws_base, code_rows, rows_w, rows_ok & (num_full > 2), stride_wsn,
                              gl.minimum(2, gl.maximum(num_full - 1, 0)) * BLOCK_K, k_words, k_groups, WORD3, False,
                              SCALE_WORDS, STEP_MULT)
        for i in range(1, num_full - 1, 2):
            acc, c, sc = _ahead2_step(acc, c, sc, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn, i,
                                      num_full, k_words, k_groups, b_smem, b_base, bk, b_ok, K_DIM, BLOCK_A, WORD3,
                                      A_LAYOUT, QUAD, LOOP_K_MASK, SCALE_WORDS, STEP_MULT, STAGES, AHEAD)
            acc, c2, sc2 = _ahead2_step(acc, c2, sc2, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn,
                                        i + 1, num_full, k_words, k_groups, b_smem, b_base, bk, b_ok, K_DIM, BLOCK_A,
                                        WORD3, A_LAYOUT, QUAD, LOOP_K_MASK, SCALE_WORDS, STEP_MULT, STAGES, AHEAD)
        if (num_full % 2 == 0) & (num_full > 0):   # one step left: num_full - 1, its codes in (c, sc)
            acc, c, sc = _ahead2_step(acc, c, sc, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn,
                                      num_full - 1, num_full, k_words, k_groups, b_smem, b_base, bk, b_ok, K_DIM,
                                      BLOCK_A, WORD3, A_LAYOUT, QUAD, LOOP_K_MASK, SCALE_WORDS, STEP_MULT, STAGES,
                                      AHEAD)
    else:
        for i in range(1, num_full):
            acc, a, c, sc = _next_a(acc, c, sc, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_wsn, i,
                                    num_full, k_words, k_groups, BLOCK_A, WORD3, A_LAYOUT, QUAD, LOOP_K_MASK,
                                    SCALE_WORDS, STEP_MULT, False, gl.num_warps() == 4)
            if b_tma is not None:
                acc = _tma_step(a, acc, b_tma, full, b_smem, i, n_steps, STAGES)
            else:
                _b_ready(AHEAD)
                _issue_b_parts(b1, b2_parts, i + AHEAD, K_DIM, STAGES)
                acc = _mma_parts(a, b_smem, b2_smem, i % STAGES, acc)
    if PARTIAL_K:
        if num_full > 0:
            acc, a = _partial_step_a(acc, lut, w_words, ws_base, code_rows, rows_w, rows_ok, stride_ww, stride_wsn,
                                     num_full, k_words, k_groups, BLOCK_A, WORD3, A_LAYOUT, SCALE_WORDS, TILED,
                                     STEP_MULT)
            if b_tma is not None:
                acc = _tma_step(a, acc, b_tma, full, b_smem, num_full, n_steps, STAGES)
            else:
                _b_ready(AHEAD)
                acc = _mma_parts(a, b_smem, b2_smem, num_full % STAGES, acc)
            if K_LOOP == K_LOOP_OVERLAP:     # `acc` left the overlapped loop waited for (a tensor): the same type
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    if b_tma is not None:
        if gl.num_warps() == 8:
            if n_steps >= 2:    # the second warpgroup's last release (step n_steps - 1)
                _wg_acquire(n_steps - 1)
    else:
        async_copy.wait_group(0)
    acc = _mma_wait_all(acc)
    # NOTES: the epilogue's layout conversion reuses the ring's shared memory; with 8 warps the other
    # warpgroup's last wgmma may still be reading it (measured on H100: wrong bits, 8-warp configs
    # only; the compiler's own barrier here sits before the wgmma wait).
    gl.thread_barrier()
    if b_tma is not None:
        for s in gl.static_range(STAGES):
            mbarrier.invalidate(full.index(s))
    return acc


@functools.lru_cache(maxsize=None)
def _layouts(block_m: int, num_warps: int = 4) -> dict:
    """The constexpr layouts of a block_m-token tile. NOTES: cached; building them took ~8 µs of host time per
    launch, twice with a sub body (callers only spread the dict)."""
    return dict(
        MMA=gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, block_m, 16]),
        B_LOAD=gl.BlockedLayout([1, 8], [2, 16], [num_warps, 1], [1, 0]),   # [BLOCK_M, 128] bf16, 16-B cp.async
        EPI=gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0]))       # token-major [BLOCK_M, BLOCK_N] epilogue


@gluon.jit
def _tile_pids(N_FASTEST: gl.constexpr):
    """(tile program id, its count, N-block id). NOTES: N_FASTEST (the grid is [N blocks, tiles]) runs all N
    blocks of a token tile next to each other, so its activation rows come from L2 instead of being re-read
    from HBM once per N block (tile-major at dsv3 T = 512: GEMM2 read 37% more from HBM, NOTES "v20").
    N_FASTEST = G >= 2 (GemmConfig.group_m): G adjacent tiles take each N block in turn, so an expert's
    second tile reads that block's weights from L2 right after its first (N-block-major alone re-reads them
    once every tile of the expert's first is done: dsv3 T = 2048 GEMM1 read 1.46x its weights from HBM).
    The order only: every (tile, N block) pair is still one program, computed the same way."""
    if N_FASTEST >= 2:
        num_n = gl.num_programs(0)
        num_tiles = gl.num_programs(1)
        lin = gl.program_id(1) * num_n + gl.program_id(0)
        first = (lin // (N_FASTEST * num_n)) * N_FASTEST
        in_group = gl.minimum(num_tiles - first, N_FASTEST)     # the last group may be short
        r = lin - first * num_n
        return first + r % in_group, num_tiles, r // in_group
    if N_FASTEST:
        return gl.program_id(1), gl.num_programs(1), gl.program_id(0)
    return gl.program_id(0), gl.num_programs(0), gl.program_id(1)


def _as_words(w: torch.Tensor) -> torch.Tensor:
    """MXFP4 codes [E, N, K/2] uint8 as int32 words [E, N, K/8] (same memory; K % 32 == 0 and the
    transform's contiguous rows make every row 16-byte aligned)."""
    if w.stride(-1) != 1 or w.shape[-1] % 16 or any(st % 16 for st in w.stride()[:-1]) or w.data_ptr() % 16:
        raise ValueError(f"gluon kernel: weight codes must be contiguous rows of 16-byte multiples, got shape "
                         f"{tuple(w.shape)} strides {w.stride()}")
    return w.view(torch.int32)


def _launch(kernel, grid_n: int, num_slots: int, e_local: int, cfg, expected_slots, args: tuple, kwargs: dict,
            first_kwargs: dict | None = None):
    """One launch over all tiles, or (cfg.tail_block_m) the FULL launch and the TAIL launch (see SPLIT_*).
    `first_kwargs`: for the first launch only (the programmatic dependent launch of GEMM2).
    NOTES: prefill-sized token tiles (>= 128) run N-block-major (see _tile_pids), decode tiles tile-major, unless
    cfg.n_fastest says otherwise; an N-block-major launch in groups of cfg.group_m tiles if set."""
    tiles, unit = _max_tiles(num_slots, e_local, cfg.block_m), packing_unit(expert_pad(e_local))
    if tiles >= unit:
        raise ValueError(f"gluon kernel: {num_slots} slots over {e_local} local experts make up to {tiles} tiles of "
                         f"{cfg.block_m} rows; tile_of_program needs fewer than {unit} (use a larger block_m)")

    def one(block_m, split, max_tiles, first=None):
        sub = cfg.sub_block_m or 0
        kw = dict(kwargs, BLOCK_M=block_m, SPLIT=split, FULL_M=cfg.block_m, TAIL_M=cfg.tail_block_m or cfg.block_m,
                  **_layouts(block_m, cfg.num_warps))
        if sub:     # see _gemm1_wgmma_tile
            kw.update(SUB_M=sub, **{f"{k}_S": v for k, v in _layouts(sub, cfg.num_warps).items()})
        if cfg.three_quarter and not kwargs.get("ROW_TMA"):      # the three-quarter body's two token parts
            kw.update(TQ_M=3 * block_m // 4, **{f"{k}_H": v for k, v in _layouts(block_m // 2, cfg.num_warps).items()},
                      **{f"{k}_Q": v for k, v in _layouts(block_m // 4, cfg.num_warps).items()})
        return _launch_over_tiles(kernel, grid_n, num_slots, e_local, block_m, expected_slots, args, kw,
                                  n_fastest=(cfg.group_m or 1) if cfg.grid_n_fastest_for(block_m) else False,
                                  max_tiles=max_tiles, first_kwargs=first)
    if cfg.tail_block_m is None:
        return one(cfg.block_m, SPLIT_ALL, None, first_kwargs)
    handle = one(cfg.block_m, SPLIT_FULL, None, first_kwargs)
    one(cfg.tail_block_m, SPLIT_TAIL, lambda slots: max(1, min(slots, e_local)))   # at most one per expert
    return handle


def _check(kernel: str, t: torch.Tensor, cfg, words: torch.Tensor, scales: torch.Tensor, quad: bool) -> None:
    if quad and words.shape[-1] < weight_layout.QUAD_BLOCK_BYTES // 4:   # _wgmma_gemm decodes step 0 as quad
        raise ValueError(f"{kernel}: quad-ordered weights need K >= 128 (weight_layout.can_quad), got K = "
                         f"{words.shape[-1] * 8}")
    if max(words.stride(0), scales.stride(0)) >= 2 ** 31:     # _weight_rows: int32 offsets within an expert
        raise ValueError(f"{kernel}: one expert's weights span {words.stride(0)} words / {scales.stride(0)} scale "
                         "bytes; the gluon kernel addresses them with int32 (< 2^31)")
    configs.check_gpu_config(cfg, kernel, hopper=configs.is_hopper(t.device))


def _k_loop(cfg, words: torch.Tensor, scales: torch.Tensor) -> int:
    """cfg.k_loop, except that the code ring (K_LOOP_RING) needs a whole K step and scale words: without them the
    plain loop runs (a performance choice only: every K loop issues the same wgmmas, same bits)."""
    if cfg.k_loop >= K_LOOP_RING and (words.shape[-1] < _BLOCK_K // 8 or not scale_words(scales)):
        return K_LOOP_PLAIN.value
    return cfg.k_loop


def _rows_done_counters(plan) -> torch.Tensor:
    """plan.expert_rows_done (int32 [E_local], zeroed by routing), checked before any launch."""
    done = plan.expert_rows_done
    if done is None or done.dtype != torch.int32 or done.numel() < plan.num_local_experts:
        raise ValueError("early GEMM2 needs plan.expert_rows_done (int32 [E_local], from routing.build_routing), got "
                         f"{None if done is None else (done.dtype, tuple(done.shape))}")
    return done


def scale_words(scales: torch.Tensor) -> bool:
    """Whether the kernel may load a K step's 4 scale bytes of a row as one aligned 32-bit word: rows start
    4-byte aligned and the last row's padding up to the next 4 bytes is inside the tensor's storage
    (weight_layout.pad_scale_rows makes transformed weights so). Otherwise it loads bytes."""
    e, n, groups = scales.shape
    align = weight_layout.SCALE_ROW_ALIGN
    padded = -(-groups // align) * align
    if scales.stride(2) != 1 or scales.stride(1) % align or scales.stride(0) % align or scales.data_ptr() % align:
        return False
    if e * n == 0:
        return True
    last = scales.storage_offset() + (e - 1) * scales.stride(0) + (n - 1) * scales.stride(1) + padded
    return scales.stride(1) >= padded and last <= scales.untyped_storage().nbytes()


_LUT: dict = {}


def fp4_lut(device: torch.device) -> torch.Tensor:
    """The lookup words of `_lookup_tables` (int32 [16]: th0 x 8, tl0 x 8) on `device`, made once
    (`transform_weights_for_mega_moe` makes it for CUDA weights). NOTES: not inside CUDA-graph capture —
    captured fills would run only at replay, so eager calls before that would read garbage."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (device.type, device.index)
    if key not in _LUT:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("tmoe: the Gluon kernels' lookup table does not exist yet on "
                               f"{device}; run the layer (or transform_weights_for_mega_moe) once on this device "
                               "before capturing it in a CUDA graph")
        lut = torch.empty(16, dtype=torch.int32, device=device)
        lut[:8].fill_(FP4_LUT_WORDS[0])
        lut[8:].fill_(FP4_LUT_WORDS[1])
        _LUT[key] = lut
    return _LUT[key]


@gluon.jit
def _gemm1_wgmma_tile(tile, nblk, x_ptr, stride_x, w1_ptr, w1_sf_ptr, lut_ptr, stride_we, stride_wn, stride_wse,
                      stride_wsn, offsets_ptr, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr,
                      stride_bias, num_local_experts, hidden, inter, clamp, alpha, k_words, k_groups,
                      TOPK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, E_PAD: gl.constexpr,
                      HAS_CLAMP: gl.constexpr, FAST_MATH: gl.constexpr, ACTIVATION: gl.constexpr,
                      HAS_BIAS: gl.constexpr, STAGES: gl.constexpr, MMA: gl.constexpr, B_LOAD: gl.constexpr,
                      EPI: gl.constexpr, QUAD: gl.constexpr, PARTIAL_K: gl.constexpr, SCALE_WORDS: gl.constexpr,
                      TILED: gl.constexpr, SPLIT: gl.constexpr, FULL_M: gl.constexpr, TAIL_M: gl.constexpr,
                      K_LOOP: gl.constexpr, N_BLOCKS: gl.constexpr, GDC_WAIT: gl.constexpr = False,
                      SUB_M: gl.constexpr = 0, MMA_S: gl.constexpr = None, B_LOAD_S: gl.constexpr = None,
                      EPI_S: gl.constexpr = None, done_ptr=None, SIGNAL: gl.constexpr = False,
                      TQ_M: gl.constexpr = 0, MMA_H: gl.constexpr = None, B_LOAD_H: gl.constexpr = None,
                      EPI_H: gl.constexpr = None, MMA_Q: gl.constexpr = None, B_LOAD_Q: gl.constexpr = None,
                      EPI_Q: gl.constexpr = None, b_desc=None):
    """SIGNAL: add the tile's rows to the expert's counter at done_ptr after each channel block (early GEMM2).
    b_desc (GemmConfig.tma_b): the BLOCK_M body reads its rows by TMA from the sorted token rows (row_gather). NOTES:
    the sub and three-quarter bodies keep the cp.async ring: on TMA boxes of their widths (the ring one step ahead
    against cp.async's two) the layer measured +1.3..+2.3% (dsv3 / gpt-oss T = 8192, H200, benchmarks/NOTES.md "v33").
    TQ_M = 3/4 BLOCK_M (GemmConfig.three_quarter; 0: off): a tile of at most TQ_M rows (more than SUB_M) runs the
    BLOCK_M / 2 + BLOCK_M / 4-token body (layouts *_H, *_Q)."""
    expert, row_start, row_end, real = tile_of_program(offsets_ptr, tile, num_local_experts, BLOCK_M, E_PAD,
                                                       SPLIT, FULL_M, TAIL_M)
    if real:
        for j in gl.static_range(N_BLOCKS):      # see _gemm2_wgmma_tile
            n0 = (nblk * N_BLOCKS + j) * BLOCK_N
            if (N_BLOCKS == 1) or (n0 < inter):
                # NOTES (GemmConfig.sub_block_m): a tile whose expert has at most SUB_M rows left runs the SUB_M-token
                # body. One program per BLOCK_M tokens decodes each weight block once (at ~64 tokens per expert,
                # 64-token tiles decode ~1.5x the weights of the experts they touch), and its wgmmas are only as wide
                # as the rows need (128-token tiles compute ~2x the real rows). Same wgmmas per token, same bits.
                if (SUB_M > 0) and (row_end - row_start <= SUB_M):
                    _gemm1_block(n0, row_start, row_end, expert, x_ptr, stride_x, w1_ptr, w1_sf_ptr, lut_ptr,
                                 stride_we, stride_wn, stride_wse, stride_wsn, sorted_ptr, weights_ptr, act_ptr,
                                 stride_act, bias_ptr, stride_bias, hidden, inter, clamp, alpha, k_words, k_groups,
                                 TOPK, SUB_M, BLOCK_N, HAS_CLAMP, FAST_MATH, ACTIVATION, HAS_BIAS, STAGES, MMA_S,
                                 B_LOAD_S, EPI_S, QUAD, PARTIAL_K, SCALE_WORDS, TILED, K_LOOP, GDC_WAIT)
                elif (TQ_M > 0) and (row_end - row_start <= TQ_M):
                    # NOTES: the tile's rows fit 3/4 of it: the last quarter's wgmma columns would compute nothing
                    _gemm1_block(n0, row_start, row_end, expert, x_ptr, stride_x, w1_ptr, w1_sf_ptr, lut_ptr,
                                 stride_we, stride_wn, stride_wse, stride_wsn, sorted_ptr, weights_ptr, act_ptr,
                                 stride_act, bias_ptr, stride_bias, hidden, inter, clamp, alpha, k_words, k_groups,
                                 TOPK, BLOCK_M // 2, BLOCK_N, HAS_CLAMP, FAST_MATH, ACTIVATION, HAS_BIAS, STAGES,
                                 MMA_H, B_LOAD_H, EPI_H, QUAD, PARTIAL_K, SCALE_WORDS, TILED, K_LOOP, GDC_WAIT, True,
                                 MMA_Q, B_LOAD_Q, EPI_Q)
                else:
                    _gemm1_block(n0, row_start, row_end, expert, x_ptr, stride_x, w1_ptr, w1_sf_ptr, lut_ptr,
                                 stride_we, stride_wn, stride_wse, stride_wsn, sorted_ptr, weights_ptr, act_ptr,
                                 stride_act, bias_ptr, stride_bias, hidden, inter, clamp, alpha, k_words, k_groups,
                                 TOPK, BLOCK_M, BLOCK_N, HAS_CLAMP, FAST_MATH, ACTIVATION, HAS_BIAS, STAGES, MMA,
                                 B_LOAD, EPI, QUAD, PARTIAL_K, SCALE_WORDS, TILED, K_LOOP, GDC_WAIT, False, None, None,
                                 None, b_desc)
                if SIGNAL:      # NOTES: row_end is the expert's end (tile_of_program), the tile holds BLOCK_M rows
                    _rows_done(done_ptr, expert, gl.minimum(row_end - row_start, BLOCK_M))


@gluon.jit
def _gemm1_block(n0, row_start, row_end, expert, x_ptr, stride_x, w1_ptr, w1_sf_ptr, lut_ptr, stride_we, stride_wn,
                 stride_wse, stride_wsn, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr, stride_bias, hidden,
                 inter, clamp, alpha, k_words, k_groups, TOPK: gl.constexpr, BLOCK_M: gl.constexpr,
                 BLOCK_N: gl.constexpr, HAS_CLAMP: gl.constexpr, FAST_MATH: gl.constexpr, ACTIVATION: gl.constexpr,
                 HAS_BIAS: gl.constexpr, STAGES: gl.constexpr, MMA: gl.constexpr, B_LOAD: gl.constexpr,
                 EPI: gl.constexpr, QUAD: gl.constexpr, PARTIAL_K: gl.constexpr, SCALE_WORDS: gl.constexpr,
                 TILED: gl.constexpr, K_LOOP: gl.constexpr, GDC_WAIT: gl.constexpr, TQ: gl.constexpr = False,
                 MMA2: gl.constexpr = None, B_LOAD2: gl.constexpr = None, EPI2: gl.constexpr = None, b_desc=None):
    """Gate / up channels [n0, n0 + BLOCK_N) of one token tile of one expert, SwiGLU and MXFP8 into act. TQ: the
    tile's rows are BLOCK_M + BLOCK_M / 2 (a three-quarter body, layouts MMA2 / B_LOAD2 / EPI2 for the second part).
    b_desc: the activation rows by TMA from the sorted rows' descriptor (see _gemm1_wgmma_tile)."""
    tok64, tok_ok = _tile_tokens(sorted_ptr, row_start, row_end, TOPK, BLOCK_M, B_LOAD)
    b2 = _tile_tokens(sorted_ptr, row_start + BLOCK_M, row_end, TOPK, BLOCK_M // 2, B_LOAD2) if TQ else None
    acc = _wgmma_gemm(x_ptr, tok64, tok_ok, stride_x,
                      w1_ptr + expert.to(gl.int64) * stride_we, w1_sf_ptr + expert.to(gl.int64) * stride_wse,
                      stride_wn, stride_wsn, lut_ptr, n0, inter + n0, inter - n0, hidden, k_words, k_groups,
                      2 * BLOCK_N, True, BLOCK_M, STAGES, MMA, B_LOAD, QUAD, PARTIAL_K, SCALE_WORDS, TILED,
                      K_LOOP, GDC_WAIT, None, b2, MMA2, B_LOAD2, None if b_desc is None else (b_desc, row_start))
    if TQ:
        acc, acc2 = acc
    gemm1_tile_epilogue(acc, n0, row_start, row_end, expert, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr,
                        stride_bias, inter, clamp, alpha, BLOCK_M, BLOCK_N, HAS_CLAMP, FAST_MATH, ACTIVATION,
                        HAS_BIAS, EPI)
    if TQ:      # the second part's rows
        gemm1_tile_epilogue(acc2, n0, row_start + BLOCK_M, row_end, expert, sorted_ptr, weights_ptr, act_ptr,
                            stride_act, bias_ptr, stride_bias, inter, clamp, alpha, BLOCK_M // 2, BLOCK_N, HAS_CLAMP,
                            FAST_MATH, ACTIVATION, HAS_BIAS, EPI2)


@gluon.jit
def _tile_tokens(sorted_ptr, first_row, row_end, TOPK: gl.constexpr, ROWS: gl.constexpr, B_LOAD: gl.constexpr):
    """The token (activation row, int64) of sorted rows first_row .. first_row + ROWS - 1 and whether each is the
    expert's (row < row_end), in the activation load's row layout."""
    rows = first_row + gl.arange(0, ROWS, layout=gl.SliceLayout(1, B_LOAD))
    ok = rows < row_end
    return (gl.load(sorted_ptr + rows, mask=ok, other=0) // TOPK).to(gl.int64), ok


@gluon.jit
def gemm1_tile_epilogue(acc, n0, row_start, row_end, expert, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr,
                        stride_bias, inter, clamp, alpha, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                        HAS_CLAMP: gl.constexpr, FAST_MATH: gl.constexpr, ACTIVATION: gl.constexpr,
                        HAS_BIAS: gl.constexpr, EPI: gl.constexpr):
    """acc [2 * BLOCK_N, BLOCK_M] of the gate / up A rows (_weight_rows with GATE_UP) -> SwiGLU, MXFP8 into act rows
    of the token tile (grouped_gemm._gemm1_epilogue). A-tile row r = 16 * a + 8 * part + b holds channel
    n0 + 8 * a + b of gate (part 0) / up (part 1)."""
    acc = gl.reshape(gl.permute(gl.reshape(acc, [2 * BLOCK_N // 16, 2, 8, BLOCK_M]), (3, 0, 2, 1)),
                     [BLOCK_M, BLOCK_N, 2])
    if _half_rows(2 * BLOCK_N, gl.num_warps()):
        # NOTES: a half tile's gate / up rows of a channel are in warps 2a / 2a + 1 (row 8w + g): one pass
        # through shared memory puts them in one thread
        acc = gl.convert_layout(acc, gl.BlockedLayout([1, 1, 2], [1, 32, 1], [1, gl.num_warps(), 1], [2, 1, 0]))
    acc_g, acc_u = gl.split(acc)
    acc_g = gl.convert_layout(acc_g, EPI)
    acc_u = gl.convert_layout(acc_u, EPI)
    rows = row_start + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, EPI))
    row_ok = rows < row_end
    slot = gl.load(sorted_ptr + rows, mask=row_ok, other=0)
    n = n0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, EPI))
    _gemm1_epilogue(acc_g, acc_u, rows, row_ok, slot, n, n < inter, expert, weights_ptr, act_ptr, stride_act,
                    bias_ptr, stride_bias, inter, clamp, alpha, BLOCK_M, BLOCK_N, HAS_CLAMP, FAST_MATH,
                    ACTIVATION, HAS_BIAS, False)


@gluon.jit
def _gemm1_wgmma_kernel(x_ptr, stride_x, w1_ptr, w1_sf_ptr, lut_ptr, stride_we, stride_wn, stride_wse, stride_wsn,
                        offsets_ptr, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr, stride_bias,
                        num_local_experts, hidden, inter, clamp, alpha, k_words, k_groups, tile_offset,
                        TOPK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, E_PAD: gl.constexpr,
                        HAS_CLAMP: gl.constexpr, FAST_MATH: gl.constexpr, ACTIVATION: gl.constexpr,
                        HAS_BIAS: gl.constexpr, STAGES: gl.constexpr, MMA: gl.constexpr, B_LOAD: gl.constexpr,
                        EPI: gl.constexpr, QUAD: gl.constexpr, PARTIAL_K: gl.constexpr, SCALE_WORDS: gl.constexpr,
                        TILED: gl.constexpr, PERSISTENT: gl.constexpr, N_FASTEST: gl.constexpr,
                        SPLIT: gl.constexpr, FULL_M: gl.constexpr, TAIL_M: gl.constexpr, K_LOOP: gl.constexpr,
                        N_BLOCKS: gl.constexpr, GDC: gl.constexpr = GDC_PLAIN, SUB_M: gl.constexpr = 0,
                        MMA_S: gl.constexpr = None, B_LOAD_S: gl.constexpr = None, EPI_S: gl.constexpr = None,
                        done_ptr=None, SIGNAL: gl.constexpr = False,
                        TQ_M: gl.constexpr = 0, MMA_H: gl.constexpr = None, B_LOAD_H: gl.constexpr = None,
                        EPI_H: gl.constexpr = None, MMA_Q: gl.constexpr = None, B_LOAD_Q: gl.constexpr = None,
                        EPI_Q: gl.constexpr = None, b_desc=None):
    """b_desc: GemmConfig.tma_b's TMA descriptor of the sorted token rows (row_gather), else None."""
    if GDC == GDC_PLAIN:
        _gdc_launch_dependents()     # GEMM2 (launched with launch_pdl) may start its prologue now
    elif GDC == GDC_WAIT_FIRST:
        _gdc_wait()
        _gdc_launch_dependents()
    pid, npid, nblk = _tile_pids(N_FASTEST)
    # NOTES: PERSISTENT = the overflow launch of `_launch_over_tiles`. The plain launch keeps its own
    # straight-line body: the same call inside a loop costs ~60 registers (offline SASS).
    if PERSISTENT:
        for tile in range(tile_offset + pid, num_tiles(offsets_ptr, num_local_experts, BLOCK_M, E_PAD, SPLIT,
                                                       FULL_M, TAIL_M), npid):
            _gemm1_wgmma_tile(tile, nblk, x_ptr, stride_x, w1_ptr, w1_sf_ptr, lut_ptr, stride_we, stride_wn, stride_wse,
                              stride_wsn, offsets_ptr, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr,
                              stride_bias, num_local_experts, hidden, inter, clamp, alpha, k_words, k_groups,
                              TOPK, BLOCK_M, BLOCK_N, E_PAD, HAS_CLAMP, FAST_MATH, ACTIVATION, HAS_BIAS, STAGES,
                              MMA, B_LOAD, EPI, QUAD, PARTIAL_K, SCALE_WORDS, TILED, SPLIT, FULL_M, TAIL_M, K_LOOP,
                              N_BLOCKS, False, SUB_M, MMA_S, B_LOAD_S, EPI_S, done_ptr, SIGNAL, TQ_M, MMA_H, B_LOAD_H,
                              EPI_H, MMA_Q, B_LOAD_Q, EPI_Q, b_desc)
    else:
        _gemm1_wgmma_tile(pid, nblk, x_ptr, stride_x, w1_ptr, w1_sf_ptr, lut_ptr, stride_we, stride_wn, stride_wse,
                          stride_wsn, offsets_ptr, sorted_ptr, weights_ptr, act_ptr, stride_act, bias_ptr,
                          stride_bias, num_local_experts, hidden, inter, clamp, alpha, k_words, k_groups, TOPK,
                          BLOCK_M, BLOCK_N, E_PAD, HAS_CLAMP, FAST_MATH, ACTIVATION, HAS_BIAS, STAGES, MMA,
                          B_LOAD, EPI, QUAD, PARTIAL_K, SCALE_WORDS, TILED, SPLIT, FULL_M, TAIL_M, K_LOOP, N_BLOCKS,
                          GDC == GDC_EARLY, SUB_M, MMA_S, B_LOAD_S, EPI_S, done_ptr, SIGNAL, TQ_M, MMA_H, B_LOAD_H,
                          EPI_H, MMA_Q, B_LOAD_Q, EPI_Q, b_desc)
        if GDC == GDC_EARLY:
            _gdc_wait()     # programs that found no tile wait too (see _gemm2_wgmma_kernel)


@gluon.jit
def _gemm2_wgmma_tile(tile, nblk, act_ptr, stride_act, w2_ptr, w2_sf_ptr, lut_ptr, stride_we, stride_wn, stride_wse,
                      stride_wsn, offsets_ptr, sorted_ptr, weights_ptr, out_ptr, stride_out, row_addr_ptr, epi,
                      peer_descs, bias_ptr, stride_bias, num_local_experts, hidden, inter, k_words, k_groups,
                      BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, E_PAD: gl.constexpr, HAS_BIAS: gl.constexpr,
                      ROW_ADDR: gl.constexpr, ROW_TMA: gl.constexpr, R_PEERS: gl.constexpr, STAGES: gl.constexpr,
                      MMA: gl.constexpr, B_LOAD: gl.constexpr, EPI: gl.constexpr, QUAD: gl.constexpr,
                      PARTIAL_K: gl.constexpr, SCALE_WORDS: gl.constexpr, TILED: gl.constexpr, SPLIT: gl.constexpr,
                      FULL_M: gl.constexpr, TAIL_M: gl.constexpr, K_LOOP: gl.constexpr, N_BLOCKS: gl.constexpr,
                      GDC_WAIT: gl.constexpr = False, SUB_M: gl.constexpr = 0, MMA_S: gl.constexpr = None,
                      B_LOAD_S: gl.constexpr = None, EPI_S: gl.constexpr = None, done_ptr=None, done_per_row=0,
                      EARLY: gl.constexpr = False,
                      TQ_M: gl.constexpr = 0, MMA_H: gl.constexpr = None, B_LOAD_H: gl.constexpr = None,
                      EPI_H: gl.constexpr = None, MMA_Q: gl.constexpr = None, B_LOAD_Q: gl.constexpr = None,
                      EPI_Q: gl.constexpr = None, b_desc=None):
    """EARLY (with GDC_WAIT): wait for this expert's rows in GEMM1's counter at done_ptr, not for all of GEMM1 (GEMM1
    adds a tile's rows once per channel block: done_per_row blocks per row; see _previous_done). TQ_M: see
    _gemm1_wgmma_tile (0 with ROW_TMA: its epilogue buffers are the full tile's)."""
    expert, row_start, row_end, real = tile_of_program(offsets_ptr, tile, num_local_experts, BLOCK_M, E_PAD,
                                                       SPLIT, FULL_M, TAIL_M)
    if real:
        if EARLY:       # a real tile's expert only: past the last tile `expert` is out of the offsets' range
            ready = (done_ptr + expert,
                     (gl.load(offsets_ptr + expert + 1) - gl.load(offsets_ptr + expert)) * done_per_row)
        else:
            ready = None
        # NOTES: N_BLOCKS > 1: this program computes N_BLOCKS adjacent channel blocks of its token tile
        # (unrolled: a runtime loop costs ~30 registers, offline SASS), i.e. one tile search and program start
        # per N_BLOCKS weight passes — what short K loops (qwen3's K = 768: 6 steps) spend a large share on.
        for j in gl.static_range(N_BLOCKS):
            n0 = (nblk * N_BLOCKS + j) * BLOCK_N
            if (N_BLOCKS == 1) or (n0 < hidden):
                if (SUB_M > 0) and (row_end - row_start <= SUB_M):     # see _gemm1_wgmma_tile
                    if ROW_TMA:     # the first SUB_M rows of the epilogue's buffers
                        epi_s = (epi[0].slice(0, SUB_M), epi[1].slice(0, SUB_M))
                    else:
                        epi_s = epi
                    _gemm2_block(n0, row_start, row_end, expert, act_ptr, stride_act, w2_ptr, w2_sf_ptr, lut_ptr,
                                 stride_we, stride_wn, stride_wse, stride_wsn, sorted_ptr, weights_ptr, out_ptr,
                                 stride_out, row_addr_ptr, epi_s, peer_descs, bias_ptr, stride_bias, hidden, inter,
                                 k_words, k_groups, SUB_M, BLOCK_N, HAS_BIAS, ROW_ADDR, ROW_TMA, R_PEERS, STAGES,
                                 MMA_S, B_LOAD_S, EPI_S, QUAD, PARTIAL_K, SCALE_WORDS, TILED, K_LOOP, GDC_WAIT, ready)
                elif (TQ_M > 0) and (row_end - row_start <= TQ_M):     # see _gemm1_wgmma_tile
                    _gemm2_block(n0, row_start, row_end, expert, act_ptr, stride_act, w2_ptr, w2_sf_ptr, lut_ptr,
                                 stride_we, stride_wn, stride_wse, stride_wsn, sorted_ptr, weights_ptr, out_ptr,
                                 stride_out, row_addr_ptr, epi, peer_descs, bias_ptr, stride_bias, hidden, inter,
                                 k_words, k_groups, BLOCK_M // 2, BLOCK_N, HAS_BIAS, ROW_ADDR, False, R_PEERS, STAGES,
                                 MMA_H, B_LOAD_H, EPI_H, QUAD, PARTIAL_K, SCALE_WORDS, TILED, K_LOOP, GDC_WAIT, ready,
                                 True, MMA_Q, B_LOAD_Q, EPI_Q)
                else:
                    _gemm2_block(n0, row_start, row_end, expert, act_ptr, stride_act, w2_ptr, w2_sf_ptr, lut_ptr,
                                 stride_we, stride_wn, stride_wse, stride_wsn, sorted_ptr, weights_ptr, out_ptr,
                                 stride_out, row_addr_ptr, epi, peer_descs, bias_ptr, stride_bias, hidden, inter,
                                 k_words, k_groups, BLOCK_M, BLOCK_N, HAS_BIAS, ROW_ADDR, ROW_TMA, R_PEERS, STAGES,
                                 MMA, B_LOAD, EPI, QUAD, PARTIAL_K, SCALE_WORDS, TILED, K_LOOP, GDC_WAIT, ready,
                                 False, None, None, None, b_desc)


@gluon.jit
def _gemm2_block(n0, row_start, row_end, expert, act_ptr, stride_act, w2_ptr, w2_sf_ptr, lut_ptr, stride_we, stride_wn,
                 stride_wse, stride_wsn, sorted_ptr, weights_ptr, out_ptr, stride_out, row_addr_ptr, epi, peer_descs,
                 bias_ptr, stride_bias, hidden, inter, k_words, k_groups, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                 HAS_BIAS: gl.constexpr, ROW_ADDR: gl.constexpr, ROW_TMA: gl.constexpr, R_PEERS: gl.constexpr,
                 STAGES: gl.constexpr, MMA: gl.constexpr, B_LOAD: gl.constexpr, EPI: gl.constexpr, QUAD: gl.constexpr,
                 PARTIAL_K: gl.constexpr, SCALE_WORDS: gl.constexpr, TILED: gl.constexpr, K_LOOP: gl.constexpr,
                 GDC_WAIT: gl.constexpr, ready=None, TQ: gl.constexpr = False, MMA2: gl.constexpr = None,
                 B_LOAD2: gl.constexpr = None, EPI2: gl.constexpr = None, b_desc=None):
    """Output channels [n0, n0 + BLOCK_N) of one token tile of one expert. ROW_TMA: each result row goes to the
    `home` row of its source rank by TMA stores (row_addr_ptr = PeerRows.codes, see tma_copy.store_tile_rows).
    TQ (not with ROW_TMA): a three-quarter body, see _gemm1_block. b_desc (GemmConfig.tma_b): the act rows' TMA
    descriptor (blocks of BLOCK_M rows)."""
    m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, B_LOAD))
    if TQ:
        m2 = row_start + BLOCK_M + gl.arange(0, BLOCK_M // 2, layout=gl.SliceLayout(1, B_LOAD2))
        b2 = (m2.to(gl.int64), m2 < row_end)
    else:
        b2 = None
    acc = _wgmma_gemm(act_ptr, (row_start + m).to(gl.int64), row_start + m < row_end, stride_act,
                      w2_ptr + expert.to(gl.int64) * stride_we, w2_sf_ptr + expert.to(gl.int64) * stride_wse,
                      stride_wn, stride_wsn, lut_ptr, n0, n0, hidden - n0, inter, k_words, k_groups,
                      BLOCK_N, False, BLOCK_M, STAGES, MMA, B_LOAD, QUAD, PARTIAL_K, SCALE_WORDS, TILED,
                      K_LOOP, GDC_WAIT, ready, b2, MMA2, B_LOAD2, None if b_desc is None else (b_desc, row_start))
    if TQ:
        acc, acc2 = acc
    _gemm2_tile_store(acc, n0, row_start, row_end, expert, sorted_ptr, weights_ptr, out_ptr, stride_out, row_addr_ptr,
                      epi, peer_descs, bias_ptr, stride_bias, hidden, BLOCK_M, BLOCK_N, HAS_BIAS, ROW_ADDR, ROW_TMA,
                      R_PEERS, EPI)
    if TQ:      # the second part's rows
        _gemm2_tile_store(acc2, n0, row_start + BLOCK_M, row_end, expert, sorted_ptr, weights_ptr, out_ptr,
                          stride_out, row_addr_ptr, epi, peer_descs, bias_ptr, stride_bias, hidden, BLOCK_M // 2,
                          BLOCK_N, HAS_BIAS, ROW_ADDR, ROW_TMA, R_PEERS, EPI2)


@gluon.jit
def _gemm2_tile_store(acc, n0, row_start, row_end, expert, sorted_ptr, weights_ptr, out_ptr, stride_out, row_addr_ptr,
                      epi, peer_descs, bias_ptr, stride_bias, hidden, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                      HAS_BIAS: gl.constexpr, ROW_ADDR: gl.constexpr, ROW_TMA: gl.constexpr, R_PEERS: gl.constexpr,
                      EPI: gl.constexpr):
    """GEMM2's epilogue of a [BLOCK_N, BLOCK_M] accumulator whose token columns are rows row_start.. of the tile."""
    acc = gl.convert_layout(gl.permute(acc, (1, 0)), EPI)
    rows = row_start + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, EPI))
    n = n0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, EPI))
    if ROW_TMA:
        slot, bits = _gemm2_values(acc, rows, rows < row_end, n, n < hidden, expert, sorted_ptr, weights_ptr,
                                   bias_ptr, stride_bias, HAS_BIAS, False)
        code = gl.load(row_addr_ptr + slot, mask=rows < row_end, other=0)
        tma_copy.store_tile_rows(bits, code, gl.minimum(row_end - row_start, BLOCK_M), n0, epi[0], epi[1],
                                 peer_descs, R_PEERS)
    else:
        _gemm2_epilogue(acc, rows, rows < row_end, n, n < hidden, expert, sorted_ptr, weights_ptr, out_ptr,
                        stride_out, row_addr_ptr, bias_ptr, stride_bias, HAS_BIAS, False, ROW_ADDR)


@gluon.jit
def _gemm2_wgmma_kernel(act_ptr, stride_act, w2_ptr, w2_sf_ptr, lut_ptr, stride_we, stride_wn, stride_wse, stride_wsn,
                        offsets_ptr, sorted_ptr, weights_ptr, out_ptr, stride_out, row_addr_ptr, bias_ptr,
                        stride_bias, num_local_experts, hidden, inter, k_words, k_groups, tile_offset,
                        pd0, pd1, pd2, pd3, pd4, pd5, pd6, pd7, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                        E_PAD: gl.constexpr, HAS_BIAS: gl.constexpr, ROW_ADDR: gl.constexpr, ROW_TMA: gl.constexpr,
                        R_PEERS: gl.constexpr, STAGES: gl.constexpr, MMA: gl.constexpr, B_LOAD: gl.constexpr,
                        EPI: gl.constexpr, QUAD: gl.constexpr, PARTIAL_K: gl.constexpr, SCALE_WORDS: gl.constexpr,
                        TILED: gl.constexpr, PERSISTENT: gl.constexpr, N_FASTEST: gl.constexpr, SPLIT: gl.constexpr,
                        FULL_M: gl.constexpr, TAIL_M: gl.constexpr, K_LOOP: gl.constexpr, N_BLOCKS: gl.constexpr,
                        GDC_WAIT: gl.constexpr, SUB_M: gl.constexpr = 0, MMA_S: gl.constexpr = None,
                        B_LOAD_S: gl.constexpr = None, EPI_S: gl.constexpr = None, done_ptr=None, done_per_row=0,
                        EARLY: gl.constexpr = False,
                        TQ_M: gl.constexpr = 0, MMA_H: gl.constexpr = None, B_LOAD_H: gl.constexpr = None,
                        EPI_H: gl.constexpr = None, MMA_Q: gl.constexpr = None, B_LOAD_Q: gl.constexpr = None,
                        EPI_Q: gl.constexpr = None, b_desc=None):
    """b_desc: GemmConfig.tma_b's TMA descriptor of act (BLOCK_M x BLOCK_K blocks), else None.
    ROW_TMA: the symm_mem return fused into GEMM2 by TMA stores (pd0..pd7: PeerRows.kernel_args, R_PEERS
    ranks); otherwise they are None. NOTES: eight parameters, not a tuple: the launcher does not expand
    descriptors inside tuples (Triton 3.6)."""
    pid, npid, nblk = _tile_pids(N_FASTEST)
    if ROW_TMA:
        epi = tma_copy.tile_rows_smem(BLOCK_M, BLOCK_N)
        peer_descs = (pd0, pd1, pd2, pd3, pd4, pd5, pd6, pd7)
    else:
        epi = None
        peer_descs = None
    if PERSISTENT:      # see _gemm1_wgmma_kernel
        for tile in range(tile_offset + pid, num_tiles(offsets_ptr, num_local_experts, BLOCK_M, E_PAD, SPLIT,
                                                       FULL_M, TAIL_M), npid):
            _gemm2_wgmma_tile(tile, nblk, act_ptr, stride_act, w2_ptr, w2_sf_ptr, lut_ptr, stride_we, stride_wn,
                              stride_wse, stride_wsn, offsets_ptr, sorted_ptr, weights_ptr, out_ptr, stride_out,
                              row_addr_ptr, epi, peer_descs, bias_ptr, stride_bias, num_local_experts, hidden, inter,
                              k_words, k_groups, BLOCK_M, BLOCK_N, E_PAD, HAS_BIAS, ROW_ADDR, ROW_TMA, R_PEERS, STAGES,
                              MMA, B_LOAD, EPI, QUAD, PARTIAL_K, SCALE_WORDS, TILED, SPLIT, FULL_M, TAIL_M, K_LOOP,
                              N_BLOCKS, False, SUB_M, MMA_S, B_LOAD_S, EPI_S, None, 0, False, TQ_M, MMA_H, B_LOAD_H,
                              EPI_H, MMA_Q, B_LOAD_Q, EPI_Q, b_desc)
    else:
        _gemm2_wgmma_tile(pid, nblk, act_ptr, stride_act, w2_ptr, w2_sf_ptr, lut_ptr, stride_we, stride_wn, stride_wse,
                          stride_wsn, offsets_ptr, sorted_ptr, weights_ptr, out_ptr, stride_out, row_addr_ptr, epi,
                          peer_descs, bias_ptr, stride_bias, num_local_experts, hidden, inter, k_words, k_groups,
                          BLOCK_M, BLOCK_N, E_PAD, HAS_BIAS, ROW_ADDR, ROW_TMA, R_PEERS, STAGES, MMA, B_LOAD, EPI,
                          QUAD, PARTIAL_K, SCALE_WORDS, TILED, SPLIT, FULL_M, TAIL_M, K_LOOP, N_BLOCKS, GDC_WAIT,
                          SUB_M, MMA_S, B_LOAD_S, EPI_S, done_ptr, done_per_row, EARLY, TQ_M, MMA_H, B_LOAD_H, EPI_H,
                          MMA_Q, B_LOAD_Q, EPI_Q, b_desc)
        if GDC_WAIT:
            # NOTES: every program waits for GEMM1 before it exits (a second wait is free), so GEMM2's completion,
            # which the next kernel on the stream waits for, implies GEMM1's even where a program found no tile
            _gdc_wait()
    if ROW_TMA:
        tma.store_wait(0)       # the rows' shared memory must outlive the stores reading it


# ----------------------------------------------------------------------------- launchers
def _rows_descriptor(rows: torch.Tensor, block_m: int) -> TensorDescriptor:
    """The TMA descriptor of bf16 rows [N, K] (int16 bits) in block_m x BLOCK_K boxes with the activation ring's
    shared-memory layout (GemmConfig.tma_b). TMA needs 16-byte aligned rows; ValueError otherwise."""
    if rows.stride(1) != 1 or (rows.stride(0) * 2) % 16 or rows.data_ptr() % 16:
        raise ValueError(f"tma_b: the activation rows must be contiguous with 16-byte aligned rows, got strides "
                         f"{rows.stride()} at {rows.data_ptr():#x}")
    return TensorDescriptor.from_tensor(rows.view(torch.bfloat16), [block_m, _BLOCK_K],
                                        gl.NVMMASharedLayout.get_default_for([block_m, _BLOCK_K], gl.bfloat16))


def gemm1_swiglu_wgmma(x_bits, w1, w1_sf, plan, topk_weights, act, *, topk: int, clamp: float | None,
                       fast_math: bool, cfg, activation: str = "swiglu", alpha: float = 1.702, bias=None,
                       expected_slots: int | None = None, quad: bool = False, tiled: bool = False, pdl_launch: int = 0,
                       signal_rows: bool = False, x_rows=None):
    """`grouped_gemm.gemm1_swiglu` with this file's kernel (same arguments, bitwise the same result). `pdl_launch`:
    pdl.GEMM1_PLAIN, or GEMM1_WAIT_FIRST / GEMM1_EARLY: a programmatic dependent launch (the first launch only).
    `signal_rows`: every launch adds its finished rows to plan.expert_rows_done (see _previous_done).
    `x_rows` (cfg.tma_b, required there): x_bits' rows in the plan's sorted order (row_gather.gather_rows)."""
    e_local, two_i, half_h = w1.shape
    inter, hidden = two_i // 2, half_h * 2
    w1_words = _as_words(w1)
    _check("gemm1", x_bits, cfg, w1_words, w1_sf, quad)
    kwargs_tma = {}
    if cfg.tma_b:   # NOTES: GEMM1 gathers its rows by token; a TMA box covers consecutive rows, i.e. the sorted copy
        if x_rows is None or x_rows.dim() != 2 or x_rows.shape[1] != hidden or x_rows.shape[0] < plan.num_slots:
            raise ValueError(f"{cfg}: tma_b needs x_rows, the token rows in sorted order [>= {plan.num_slots}, "
                             f"{hidden}] (row_gather.gather_rows), got "
                             f"{None if x_rows is None else tuple(x_rows.shape)}")
        kwargs_tma = dict(b_desc=_rows_descriptor(x_rows, cfg.block_m))
    args = (x_bits.view(torch.bfloat16), x_bits.stride(0),
            w1_words, w1_sf, fp4_lut(x_bits.device),
            w1_words.stride(0), w1_words.stride(1), w1_sf.stride(0), w1_sf.stride(1),
            plan.expert_offsets, plan.sorted_slots, topk_weights,
            act, act.stride(0),
            bias if bias is not None else topk_weights, bias.stride(0) if bias is not None else 0,
            e_local, hidden, inter, float(clamp) if clamp is not None else 0.0, float(alpha), hidden // 8, hidden // 32)
    kwargs = dict(**kwargs_tma, TOPK=topk, BLOCK_N=cfg.block_n, E_PAD=expert_pad(e_local),
                  HAS_CLAMP=clamp is not None, FAST_MATH=fast_math, ACTIVATION=ACTIVATIONS.index(activation),
                  HAS_BIAS=bias is not None, STAGES=cfg.num_stages, QUAD=quad, PARTIAL_K=hidden % _BLOCK_K != 0,
                  SCALE_WORDS=scale_words(w1_sf), TILED=tiled, K_LOOP=_k_loop(cfg, w1_words, w1_sf),
                  N_BLOCKS=cfg.n_blocks, num_warps=cfg.num_warps, **cfg.launch_options)
    if signal_rows:
        kwargs.update(done_ptr=_rows_done_counters(plan), SIGNAL=True)
    if pdl_launch == pdl.GEMM1_EARLY and kwargs["K_LOOP"] < K_LOOP_RING.value:
        # NOTES: the register K loops wait before their first code load anyway, so only the tile search would move
        # ahead, and it cost 2 registers (dsv3 T = 128 tile 8x32 s4: 72 -> 74, i.e. 7 -> 6 CTAs per SM; the layer
        # measured +0.6% on an H100): they wait first
        pdl_launch = pdl.GEMM1_WAIT_FIRST
    return _launch(_gemm1_wgmma_kernel, triton.cdiv(inter, cfg.block_n * cfg.n_blocks), plan.num_slots, e_local, cfg,
                   expected_slots, args, kwargs,
                   first_kwargs=dict(GDC=pdl_launch, launch_pdl=True) if pdl_launch else None)


def gemm2_wgmma(act, w2, w2_sf, plan, out_bits, *, cfg, topk_weights=None, bias=None,
                expected_slots: int | None = None, out_row_addr=None, quad: bool = False, tiled: bool = False,
                pdl: bool = False, early_rows: int = 0):
    """`grouped_gemm.gemm2` with this file's kernel (same arguments, bitwise the same result). `pdl`: the first launch
    is a programmatic dependent launch (see _gdc_wait): its programs start while the previous kernel runs; with
    `early_rows` > 0 (GEMM1's channel blocks, GEMM1 launched with signal_rows) they wait for their expert's rows only
    (_previous_done)."""
    e_local, hidden, half_i = w2.shape
    inter = half_i * 2
    w2_words = _as_words(w2)
    _check("gemm2", act, cfg, w2_words, w2_sf, quad)
    # out_row_addr: int64 addresses (SM stores), or a tma_copy.PeerRows (TMA stores into the ranks' `home`)
    peer_rows = out_row_addr if isinstance(out_row_addr, tma_copy.PeerRows) else None
    if peer_rows is not None:
        out_row_addr = peer_rows.codes
    args = (act.view(torch.bfloat16), act.stride(0),
            w2_words, w2_sf, fp4_lut(act.device),
            w2_words.stride(0), w2_words.stride(1), w2_sf.stride(0), w2_sf.stride(1),
            plan.expert_offsets, plan.sorted_slots, topk_weights if topk_weights is not None else out_bits,
            out_bits, out_bits.stride(0), out_row_addr if out_row_addr is not None else out_bits,
            bias if bias is not None else out_bits, bias.stride(0) if bias is not None else 0,
            e_local, hidden, inter, inter // 8, inter // 32)
    descs = peer_rows.kernel_args(cfg.block_n) if peer_rows is not None else [None] * tma_copy.MAX_RANKS
    if early_rows and not pdl:
        raise ValueError(f"early_rows={early_rows}: early GEMM2 is a programmatic dependent launch (pdl=True)")
    early = dict(done_ptr=_rows_done_counters(plan), done_per_row=int(early_rows), EARLY=True) if early_rows else {}
    if cfg.tma_b and peer_rows is None:     # NOTES: not under the TMA return, whose row buffers need the shared memory
        kwargs_tma = dict(b_desc=_rows_descriptor(act, cfg.block_m))
    else:
        kwargs_tma = {}
    kwargs = dict(**{f"pd{i}": d for i, d in enumerate(descs)}, **kwargs_tma, BLOCK_N=cfg.block_n,
                  E_PAD=expert_pad(e_local),
                  HAS_BIAS=bias is not None,
                  ROW_ADDR=out_row_addr is not None and peer_rows is None, ROW_TMA=peer_rows is not None,
                  R_PEERS=len(peer_rows.homes) if peer_rows is not None else 1, STAGES=cfg.num_stages,
                  QUAD=quad, PARTIAL_K=inter % _BLOCK_K != 0, SCALE_WORDS=scale_words(w2_sf), TILED=tiled,
                  K_LOOP=_k_loop(cfg, w2_words, w2_sf), N_BLOCKS=cfg.n_blocks, GDC_WAIT=False, num_warps=cfg.num_warps,
                  **cfg.launch_options)
    return _launch(_gemm2_wgmma_kernel, triton.cdiv(hidden, cfg.block_n * cfg.n_blocks), plan.num_slots, e_local, cfg,
                   expected_slots, args, kwargs,
                   first_kwargs=dict(GDC_WAIT=True, launch_pdl=True, **early) if pdl else None)
