"""Routing metadata on the device, no host sync: slots sorted by local expert.

A *slot* is one (token, k) pair, index `t * K + k`. From `topk_idx` [T, K] (global expert ids,
-1 = masked) and the rank's expert range [expert_start, expert_start + E_local) this builds

* `expert_offsets` int32 [E_local + 1]: exclusive prefix sum of the per-expert slot counts;
* `sorted_slots` int32 [capacity]: positions `expert_offsets[e] .. expert_offsets[e+1]-1` hold the
  slots routed to local expert e in ascending slot order (stable, so deterministic);
* optionally adds the counts to `cumulative_local_expert_recv_stats` int32 [E_local];
* `expert_rows_done` int32 [E_local] set to zero: GEMM1 adds the rows of each finished (tile, channel block), so GEMM2
  may start on an expert whose rows are complete while GEMM1 still runs (wgmma_gemm, "early GEMM2").

Three launches (one, `_single_chunk_kernel`, when all slots fit one chunk), each sized from T (never from
counts), so the whole thing is graph-capturable:
  1. per chunk of CHUNK slots, a histogram over experts           -> chunk_counts [C, E_PAD]
  2. per block of experts, a scan over chunks                      -> chunk_base, per-expert totals
  3. per chunk, each slot's rank among equal experts in the chunk   -> sorted_slots (each program takes the
     prefix over experts of the totals itself; the first also writes expert_offsets, the counters, the stats)
The GEMM kernels derive their ragged (expert, row-block) tile schedule from `expert_offsets` for
whatever BLOCK_M they use (see `grouped_gemm.tile_of_program`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import pdl

__all__ = ["RoutingPlan", "build_routing"]


@dataclass(frozen=True)
class RoutingPlan:
    """Device-side routing metadata of one call (see the module docstring)."""
    expert_offsets: torch.Tensor     # int32 [E_local + 1]
    sorted_slots: torch.Tensor       # int32 [capacity]; entries past expert_offsets[-1] are unused
    num_slots: int                   # T * K (host int: a shape, not a count)
    num_local_experts: int
    expert_rows_done: torch.Tensor | None = None   # int32 [E_local], zeroed by the routing kernels


@triton.jit
def _local_expert(idx_ptr, slots, num_slots, expert_start, num_local_experts, E_PAD: tl.constexpr):
    """Local expert id of each slot, or E_PAD - 1 (a sentinel bin) when masked / not local."""
    ok = slots < num_slots
    e = tl.load(idx_ptr + slots, mask=ok, other=-1).to(tl.int64) - expert_start
    local = ok & (e >= 0) & (e < num_local_experts)
    return tl.where(local, e, E_PAD - 1).to(tl.int32), local


@triton.jit
def _chunk_histogram_kernel(idx_ptr, chunk_counts_ptr, num_slots, expert_start, num_local_experts,
                            CHUNK: tl.constexpr, E_PAD: tl.constexpr, PDL: tl.constexpr):
    pdl.enter(PDL)
    c = tl.program_id(0)
    slots = c * CHUNK + tl.arange(0, CHUNK)
    e, _ = _local_expert(idx_ptr, slots, num_slots, expert_start, num_local_experts, E_PAD)
    tl.store(chunk_counts_ptr + c * E_PAD + tl.arange(0, E_PAD), tl.histogram(e, E_PAD))


@triton.jit
def _scan_kernel(chunk_counts_ptr, chunk_base_ptr, totals_ptr, num_chunks,
                 C_BLOCK: tl.constexpr, E_BLOCK: tl.constexpr, E_PAD: tl.constexpr, PDL: tl.constexpr):
    """Per expert (E_BLOCK of them per program): each chunk's exclusive prefix over the earlier chunks, and the
    expert's total. NOTES: one program per expert block, not one for all: at 65536 slots (512 chunks x 512 experts)
    the single program took 22-23 µs of an H100 call (benchmarks/NOTES.md "v29")."""
    pdl.enter(PDL)
    experts = tl.program_id(0) * E_BLOCK + tl.arange(0, E_BLOCK)
    running = tl.zeros([E_BLOCK], dtype=tl.int32)
    for c0 in range(0, num_chunks, C_BLOCK):
        chunks = c0 + tl.arange(0, C_BLOCK)
        ptrs = chunks[:, None] * E_PAD + experts[None, :]
        m = (chunks < num_chunks)[:, None]
        cnt = tl.load(chunk_counts_ptr + ptrs, mask=m, other=0)
        incl = tl.cumsum(cnt, axis=0)
        tl.store(chunk_base_ptr + ptrs, running[None, :] + incl - cnt, mask=m)
        running += tl.sum(cnt, axis=0)
    tl.store(totals_ptr + experts, running)


@triton.jit
def _expert_starts(totals_ptr, num_local_experts, E_PAD: tl.constexpr):
    """(exclusive prefix over the local experts of their totals [E_PAD] (the sentinel bin's total excluded), the
    totals themselves (zero past the local experts))."""
    experts = tl.arange(0, E_PAD)
    totals = tl.where(experts < num_local_experts, tl.load(totals_ptr + experts), 0)
    return tl.cumsum(totals, axis=0) - totals, totals


@triton.jit
def _store_expert_outputs(offsets_ptr, done_ptr, stats_ptr, starts, totals, num_local_experts, E_PAD: tl.constexpr,
                          HAS_STATS: tl.constexpr):
    """The plan's per-expert outputs from the experts' starts and totals [E_PAD]: expert_offsets (+ the total past
    the last), the rows-done counters zeroed, the totals added to the stats."""
    experts = tl.arange(0, E_PAD)
    real = experts < num_local_experts
    tl.store(offsets_ptr + experts, starts, mask=real)
    tl.store(offsets_ptr + num_local_experts, tl.sum(totals, axis=0))
    tl.store(done_ptr + experts, tl.zeros([E_PAD], dtype=tl.int32), mask=real)
    if HAS_STATS:
        prev = tl.load(stats_ptr + experts, mask=real, other=0)
        tl.store(stats_ptr + experts, prev + totals, mask=real)


@triton.jit
def _scatter_kernel(idx_ptr, chunk_base_ptr, totals_ptr, offsets_ptr, stats_ptr, done_ptr, sorted_ptr, num_slots,
                    expert_start, num_local_experts, CHUNK: tl.constexpr, E_PAD: tl.constexpr,
                    HAS_STATS: tl.constexpr, PDL: tl.constexpr):
    pdl.enter(PDL)
    c = tl.program_id(0)
    starts, totals = _expert_starts(totals_ptr, num_local_experts, E_PAD)
    if c == 0:      # once
        _store_expert_outputs(offsets_ptr, done_ptr, stats_ptr, starts, totals, num_local_experts, E_PAD, HAS_STATS)
    lane = tl.arange(0, CHUNK)
    slots = c * CHUNK + lane
    e, local = _local_expert(idx_ptr, slots, num_slots, expert_start, num_local_experts, E_PAD)
    # Rank of each slot among the earlier slots of this chunk with the same expert (stable order).
    same_before = (e[:, None] == e[None, :]) & (lane[None, :] < lane[:, None])
    rank = tl.sum(same_before.to(tl.int32), axis=1)
    base = tl.load(chunk_base_ptr + c * E_PAD + e, mask=local, other=0)
    start = tl.gather(starts, e, 0)
    tl.store(sorted_ptr + start + base + rank, slots, mask=local)


@triton.jit
def _single_chunk_kernel(idx_ptr, offsets_ptr, sorted_ptr, stats_ptr, done_ptr, num_slots, expert_start,
                         num_local_experts, CHUNK: tl.constexpr, E_PAD: tl.constexpr, HAS_STATS: tl.constexpr,
                         PDL: tl.constexpr):
    """All three steps in one program when every slot fits one chunk (decode: T * K <= 128 on a GPU, the chunk as wide
    as the slots): two launches fewer (measured in the graph-timed layer on an H100: qwen3 T = 1 -0.8 µs)."""
    pdl.enter(PDL)
    lane = tl.arange(0, CHUNK)
    experts = tl.arange(0, E_PAD)
    e, local = _local_expert(idx_ptr, lane, num_slots, expert_start, num_local_experts, E_PAD)
    totals = tl.where(experts < num_local_experts, tl.histogram(e, E_PAD), 0)
    offsets = tl.cumsum(totals, axis=0) - totals
    _store_expert_outputs(offsets_ptr, done_ptr, stats_ptr, offsets, totals, num_local_experts, E_PAD, HAS_STATS)
    # NOTES: a register gather, not a [CHUNK, E_PAD] masked sum (dsv3: 128 x 512, most of the kernel's 7 µs)
    start = tl.gather(offsets, e, 0)
    same_before = (e[:, None] == e[None, :]) & (lane[None, :] < lane[:, None])
    rank = tl.sum(same_before.to(tl.int32), axis=1)
    tl.store(sorted_ptr + start + rank, lane, mask=local)


def build_routing(topk_idx: torch.Tensor, num_local_experts: int, expert_start: int = 0,
                  capacity_slots: int | None = None, stats: torch.Tensor | None = None,
                  workspace: dict | None = None, pdl_launch: bool = False) -> RoutingPlan:
    """Build the RoutingPlan for `topk_idx` [T, K] (int64, contiguous) on its device.

    `capacity_slots` sizes `sorted_slots` (default T*K); `workspace` (a dict) caches scratch
    tensors between calls so a captured graph reuses the same memory. `pdl_launch`: every launch is a
    programmatic dependent launch (tmoe.kernels.pdl; sm_90+).
    """
    opts = dict(PDL=pdl_launch, **pdl.launch_options(pdl_launch))
    t, k = topk_idx.shape
    num_slots = t * k
    soft = not topk_idx.is_cuda
    chunk = 64 if soft else 128
    if num_slots <= chunk:
        # NOTES: one program, as wide as the slots (decode), and the offsets gathered: H100, T = 1, dsv3's 256 experts
        # 7.2 -> 2.8 µs per launch, 128 experts 6.7 -> 1.9 (benchmarks/bench_routing.py, NOTES "v17")
        chunk = max(16, triton.next_power_of_2(num_slots))
    e_pad = triton.next_power_of_2(num_local_experts + 1)
    num_chunks = max(1, triton.cdiv(num_slots, chunk))
    capacity_slots = max(capacity_slots or num_slots, 1)
    dev = topk_idx.device

    def scratch(name, shape, dtype):
        if workspace is None:
            return torch.empty(shape, dtype=dtype, device=dev)
        buf = workspace.get(name)
        need = 1
        for s in shape:
            need *= s
        if buf is None or buf.numel() < need or buf.dtype != dtype:
            buf = workspace[name] = torch.empty(need, dtype=dtype, device=dev)
        return buf[:need].view(shape)

    offsets = scratch("expert_offsets", (num_local_experts + 1,), torch.int32)
    sorted_slots = scratch("sorted_slots", (capacity_slots,), torch.int32)
    done = scratch("expert_rows_done", (num_local_experts,), torch.int32)
    idx = topk_idx.reshape(-1)
    if num_slots <= chunk:
        _single_chunk_kernel[(1,)](idx, offsets, sorted_slots, stats if stats is not None else offsets, done,
                                   num_slots, expert_start, num_local_experts, CHUNK=chunk, E_PAD=e_pad,
                                   HAS_STATS=stats is not None, num_warps=1 if soft else 2 if chunk <= 32 else 4,
                                   **opts)
        return RoutingPlan(offsets, sorted_slots, num_slots, num_local_experts, done)
    chunk_counts = scratch("chunk_counts", (num_chunks, e_pad), torch.int32)
    chunk_base = scratch("chunk_base", (num_chunks, e_pad), torch.int32)
    totals = scratch("expert_totals", (e_pad,), torch.int32)
    _chunk_histogram_kernel[(num_chunks,)](idx, chunk_counts, num_slots, expert_start, num_local_experts,
                                           CHUNK=chunk, E_PAD=e_pad, **opts)
    # NOTES: 8 experts per program: one 32-byte sector per chunk row of chunk_counts
    e_block = min(8, e_pad)
    _scan_kernel[(e_pad // e_block,)](chunk_counts, chunk_base, totals, num_chunks,
                                      C_BLOCK=16 if soft else min(256, triton.next_power_of_2(num_chunks)),
                                      E_BLOCK=e_block, E_PAD=e_pad, **opts)
    _scatter_kernel[(num_chunks,)](idx, chunk_base, totals, offsets, stats if stats is not None else offsets, done,
                                   sorted_slots, num_slots, expert_start, num_local_experts, CHUNK=chunk,
                                   E_PAD=e_pad, HAS_STATS=stats is not None, **opts)
    return RoutingPlan(offsets, sorted_slots, num_slots, num_local_experts, done)
