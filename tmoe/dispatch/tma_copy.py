"""Row copies over NVLink with the Tensor Memory Accelerator (Hopper TMA bulk tensor copies, Gluon).

The `symm_mem` return pass moves one bf16 result row (H values) per (received row, local slot) from
this rank's GEMM2 output into `home[source token * K + k]` on the source rank. The Triton return
kernel does it with SM loads and 16-byte stores; this one stages each row in shared memory with a
TMA load and sends it with a TMA store straight into the peer's `home` (the peers' buffers are
mapped into this process, so a descriptor over a peer's `home` is an ordinary TMA descriptor).
One thread per program issues the copies; up to STAGES rows per program are in flight over NVLink.

NOTES (row box): TMA box dimensions are powers of two of at most 256 elements, and a row is H bf16
values (7168 = 28 x 256, 2880 = 45 x 64): a row is viewed as [H / inner, inner] with inner the
largest power of two <= 256 dividing H, and copied as one box [1, next_pow2(H / inner), inner]. The
box runs past the row's last piece; TMA loads fill that part with zeros and TMA stores clip it, so
one copy moves exactly one row.

GEMM2's fused return uses the same descriptors a row piece at a time (`PeerRows`, `store_tile_rows`).
GPU only (sm_90); the CPU tests run the Triton return kernel (same destination rows, same bytes).
NOTES: the kernels take eight descriptor parameters and make a tuple of them inside: kernel parameters cannot
be a tuple of descriptors (Triton 3.6's launcher does not expand them).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

__all__ = ["MAX_RANKS", "PeerRows", "row_box", "row_descriptor", "tma_copy_available"]

MAX_RANKS = 8


def row_box(hidden: int) -> tuple[int, int, int]:
    """(pieces per row, piece length, box pieces) of a bf16 row of `hidden` values (see NOTES)."""
    inner = 256
    while hidden % inner:
        inner //= 2
    if inner < 8:     # a box row must span >= 16 bytes
        raise ValueError(f"hidden={hidden}: TMA row copies need hidden divisible by 8")
    pieces = hidden // inner
    box = triton.next_power_of_2(pieces)
    if box > 256:
        raise ValueError(f"hidden={hidden}: a row of {pieces} pieces of {inner} does not fit one TMA box")
    return pieces, inner, box


def row_descriptor(rows: torch.Tensor) -> TensorDescriptor:
    """A TMA descriptor copying one row of `rows` (int16 / bf16 [n, hidden], rows contiguous) per box."""
    if rows.dim() != 2 or rows.element_size() != 2 or rows.stride(1) != 1 or rows.stride(0) != rows.shape[1]:
        raise ValueError(f"row_descriptor: expected contiguous 16-bit rows [n, hidden], got {tuple(rows.shape)} "
                         f"{rows.dtype} strides {rows.stride()}")
    n, hidden = rows.shape
    pieces, inner, box = row_box(hidden)
    view = rows.view(torch.int16).view(n, pieces, inner)
    layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=3)
    return TensorDescriptor.from_tensor(view, [1, box, inner], layout)


@dataclass
class PeerRows:
    """Where GEMM2 stores each slot's result row when the symm_mem return is fused into it: `codes` (int64
    [N*K]: source rank << 32 | row of that rank's `home`) for the Gluon kernel's TMA epilogue, `addresses`
    (int64 [N*K], the same rows as absolute addresses) for kernels that store with SM stores, and every
    rank's `home` (int16 [cap_slots, H]) to build the descriptors from."""
    codes: torch.Tensor
    addresses: torch.Tensor
    homes: list
    _descs: dict = field(default_factory=dict)

    def descriptors(self, block_n: int) -> list:
        """One TMA descriptor per rank storing a [1, block_n] piece of a `home` row (cached per block_n)."""
        if block_n not in self._descs:
            layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=2)
            self._descs[block_n] = [TensorDescriptor.from_tensor(h, [1, block_n], layout) for h in self.homes]
        return self._descs[block_n]

    def kernel_args(self, block_n: int) -> list:
        """The descriptors as the Gluon GEMM2 kernel takes them (MAX_RANKS parameters, the unused repeat rank 0's)."""
        return _peer_args(self.descriptors(block_n))


def tma_copy_available(device: torch.device) -> bool:
    """Hopper (sm_90): where these kernels and the Gluon GEMM2 epilogue are built and tested."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


@gluon.jit
def _store_to(descs, peer, coord, smem, R: gl.constexpr):
    """TMA store of `smem` at `coord` of peer `peer`'s descriptor (descs: a tuple, one per rank; a branch per
    rank because the peer is a runtime value)."""
    for p in gl.static_range(R):
        if peer == p:
            tma.async_copy_shared_to_global(descs[p], coord, smem)


@gluon.jit
def _load_from(descs, peer, coord, bar, smem, R: gl.constexpr):
    """TMA load at `coord` of peer `peer`'s descriptor into `smem` (completes on `bar`)."""
    for p in gl.static_range(R):
        if peer == p:
            tma.async_copy_global_to_shared(descs[p], coord, bar, smem)


@gluon.jit
def _copy_row(c, src_desc, src_row, peer, dst_row, smem, bars, descs, R: gl.constexpr, STAGES: gl.constexpr,
              PULL: gl.constexpr):
    """Copy number c of this program: local row src_row -> row dst_row of peer `peer` (PULL: the other
    way), through ring stage c % STAGES. Returns c + 1."""
    stage = c % STAGES
    # NOTES: the stage's previous row left in the store issued STAGES copies ago; with at most
    # STAGES - 1 stores pending, that one has finished reading shared memory.
    tma.store_wait(STAGES - 1)
    bar = bars.index(stage)
    buf = smem.index(stage)
    mbarrier.expect(bar, src_desc.block_type.nbytes)
    if PULL:
        _load_from(descs, peer, [dst_row, 0, 0], bar, buf, R)
    else:
        tma.async_copy_global_to_shared(src_desc, [src_row, 0, 0], bar, buf)
    mbarrier.wait(bar, (c // STAGES) & 1)
    if PULL:
        tma.async_copy_shared_to_global(src_desc, [src_row, 0, 0], buf)
    else:
        _store_to(descs, peer, [dst_row, 0, 0], buf, R)
    return c + 1


@gluon.jit
def _ring(src_desc, STAGES: gl.constexpr):
    smem = gl.allocate_shared_memory(src_desc.dtype, [STAGES] + src_desc.block_type.shape, src_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(bars.index(s), count=1)
    return smem, bars


@gluon.jit
def _meta_of(rows_ptr, n, ok, lanes, K: gl.constexpr, META_OFF: gl.constexpr, ROW_WORDS: gl.constexpr):
    """[source token, K local expert ids] of received row n, one vector load (-1 where not ok)."""
    meta = rows_ptr + n.to(gl.int64) * ROW_WORDS + META_OFF
    return gl.load(meta + lanes, mask=(lanes <= K) & ok, other=-1)


@gluon.jit
def _lane(v, lanes, i: gl.constexpr):
    return gl.max(gl.where(lanes == i, v, -1), axis=0)


@gluon.jit
def _return_rows_kernel(rows_ptr, count_ptr, src_desc, d0, d1, d2, d3, d4, d5, d6, d7, cap_rows,
                        K: gl.constexpr, META_OFF: gl.constexpr, ROW_WORDS: gl.constexpr, R: gl.constexpr,
                        STAGES: gl.constexpr, META_LANES: gl.constexpr):
    """Each computed slot of each received row (row n * K + k of src_desc) -> row source token * K + k of
    its source rank's `home` (d<source>). Received rows are segments by source (recv_count); each
    program takes a contiguous range of the rows, so at any moment the programs feed different peers.
    NOTES: per row, the TMA loads of all its local slots go out before the first store waits for one
    (one local latency per row, not per slot), and the next row's metadata is loaded while this row's
    copies run; STAGES >= K, so the k-th load of a row may wait for STAGES - 1 - k pending stores."""
    gl.static_assert(STAGES >= K, "the ring holds one row's slots")
    descs = (d0, d1, d2, d3, d4, d5, d6, d7)
    pid = gl.program_id(0)
    total = 0
    for s in gl.static_range(R):
        total += gl.load(count_ptr + s)
    per_program = gl.cdiv(total, gl.num_programs(0))
    first = pid * per_program
    last = gl.minimum(first + per_program, total)
    smem, bars = _ring(src_desc, STAGES)
    lanes = gl.arange(0, META_LANES, layout=gl.BlockedLayout([1], [32], [gl.num_warps()], [0]))
    c = 0
    start = 0
    for s in gl.static_range(R):
        count = gl.load(count_ptr + s)
        lo = gl.maximum(first, start)
        hi = gl.minimum(last, start + count)
        meta = _meta_of(rows_ptr, s * cap_rows + lo - start, lo < hi, lanes, K, META_OFF, ROW_WORDS)
        for g in range(lo, hi):
            n = s * cap_rows + g - start
            meta_next = _meta_of(rows_ptr, n + 1, g + 1 < hi, lanes, K, META_OFF, ROW_WORDS)
            src_tok = _lane(meta, lanes, 0)
            c_row = c
            for k in gl.static_range(K):
                if _lane(meta, lanes, k + 1) >= 0:
                    tma.store_wait(STAGES - 1 - k)
                    stage = c % STAGES
                    mbarrier.expect(bars.index(stage), src_desc.block_type.nbytes)
                    tma.async_copy_global_to_shared(src_desc, [n * K + k, 0, 0], bars.index(stage), smem.index(stage))
                    c += 1
            c = c_row
            for k in gl.static_range(K):
                if _lane(meta, lanes, k + 1) >= 0:
                    stage = c % STAGES
                    mbarrier.wait(bars.index(stage), (c // STAGES) & 1)
                    _store_to(descs, s, [src_tok * K + k, 0, 0], smem.index(stage), R)
                    c += 1
            meta = meta_next
        start += count
    tma.store_wait(0)


@gluon.jit
def _block_rows_kernel(src_desc, d0, d1, d2, d3, d4, d5, d6, d7, rows_per_peer, rank, R: gl.constexpr,
                       STAGES: gl.constexpr, PULL: gl.constexpr):
    """Copy ceiling (benchmarks/sweep_ep_copy.py): rank r moves rows_per_peer rows to (PULL: from) every
    peer p != r, rows r * rows_per_peer + i there; contiguous row ranges per program."""
    descs = (d0, d1, d2, d3, d4, d5, d6, d7)
    pid = gl.program_id(0)
    total = (R - 1) * rows_per_peer
    per_program = gl.cdiv(total, gl.num_programs(0))
    first = pid * per_program
    last = gl.minimum(first + per_program, total)
    smem, bars = _ring(src_desc, STAGES)
    c = 0
    for i in range(first, last):
        j = i // rows_per_peer
        peer = j + (j >= rank).to(gl.int32)
        c = _copy_row(c, src_desc, i, peer, rank * rows_per_peer + i - j * rows_per_peer, smem, bars, descs, R,
                      STAGES, PULL)
    tma.store_wait(0)


@gluon.jit
def tile_rows_smem(BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
    """Shared memory of the TMA row epilogue (`store_tile_rows`): the tile's bf16 rows and their codes.
    NOTES: allocate it once at the kernel's top level, so that its live range spans every tile: the TMA
    stores read it after the last instruction that names it (until `tma.store_wait`), which the
    compiler's shared-memory allocator cannot see."""
    rows = gl.allocate_shared_memory(gl.int16, [BLOCK_M, BLOCK_N],
                                     gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=2))
    codes = gl.allocate_shared_memory(gl.int64, [BLOCK_M], gl.SwizzledSharedLayout(1, 1, 1, order=[0]))
    return rows, codes


@gluon.jit
def store_tile_rows(bits, code, num_rows, n0, rows_smem, codes_smem, descs, R: gl.constexpr):
    """The TMA row epilogue: row m < num_rows of `bits` (int16 [BLOCK_M, BLOCK_N], bf16 values of channels
    n0 ..) -> row (code[m] & 0xFFFFFFFF) of rank code[m] >> 32's `home` (descriptor descs[rank] of
    PeerRows.kernel_args, clipped at H).
    Asynchronous: the stores read the shared memory after this returns; the next call waits for them first,
    and the kernel must `tma.store_wait(0)` before it exits."""
    BLOCK_M: gl.constexpr = bits.shape[0]
    BLOCK_N: gl.constexpr = bits.shape[1]
    tma.store_wait(0)           # the previous tile's rows have left rows_smem
    gl.thread_barrier()
    rows_smem.store(bits)
    codes_smem.store(code)
    fence_async_shared()
    gl.thread_barrier()
    ONE: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
    # NOTES: row m as a [1, BLOCK_N] view (the descriptors' box): a [BLOCK_M, 1, BLOCK_N] view indexed by m
    pieces = rows_smem._reinterpret(gl.int16, [BLOCK_M, 1, BLOCK_N], rows_smem.layout)
    row_codes = codes_smem._reinterpret(gl.int64, [BLOCK_M, 1], codes_smem.layout)
    for m in range(num_rows):
        c = gl.max(row_codes.index(m).load(ONE), axis=0)
        _store_to(descs, c >> 32, [(c & 0xFFFFFFFF).to(gl.int32), n0], pieces.index(m), R)


def _peer_args(descs: list) -> list:
    if not 2 <= len(descs) <= MAX_RANKS:
        raise ValueError(f"TMA copies: {len(descs)} ranks, expected 2..{MAX_RANKS}")
    return list(descs) + [descs[0]] * (MAX_RANKS - len(descs))


def return_rows(recv_rows: torch.Tensor, recv_count: torch.Tensor, slot_out: torch.Tensor, home_descs: list,
                cap_rows: int, num_topk: int, meta_off: int, grid: int, stages: int = 4) -> None:
    """Launch the TMA return pass (no barrier: the caller signals after it)."""
    _return_rows_kernel[(grid,)](recv_rows, recv_count, row_descriptor(slot_out), *_peer_args(home_descs), cap_rows,
                                 K=num_topk, META_OFF=meta_off, ROW_WORDS=recv_rows.shape[1], R=len(home_descs),
                                 STAGES=max(stages, num_topk), META_LANES=max(triton.next_power_of_2(num_topk + 1), 32),
                                 num_warps=1)


def block_rows(src: torch.Tensor, peer_rows: list, rows_per_peer: int, rank: int, grid: int, stages: int,
               pull: bool = False) -> None:
    """Copy ceiling: src rows [(R-1) * rows_per_peer, H] to / from every peer's rows (see the kernel)."""
    _block_rows_kernel[(grid,)](row_descriptor(src), *_peer_args([row_descriptor(p) for p in peer_rows]),
                                rows_per_peer, rank, R=len(peer_rows), STAGES=stages, PULL=pull, num_warps=1)
