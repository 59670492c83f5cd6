"""The `symm_mem` transport: expert parallelism over NVLink through torch symmetric memory.

No host synchronization and a fixed launch sequence, so a whole layer call can be captured in a
CUDA graph and replayed. Every rank holds one symmetric allocation (torch
`_symmetric_memory.empty` + `rendezvous`, CUDA backend: no NVSHMEM, no multicast) with the same
layout, addressed from Triton through the peers' base addresses (`buffer_ptrs`):

    recv_rows  [R][T_max][ROW_WORDS] int32     segment s is written only by source rank s
    home       [T_max*K][H/2] int32            bf16 result of each of this rank's slots (by slot)
    recv_count [R] int32                       rows source s wrote into segment s this call
    signals    [2][MAX_BLOCKS][R] int32        barrier slots (channel, program, source rank)

A packed row is one token sent to one rank that owns at least one of its K experts: the token's
E4M3 bytes, its packed UE8M0 scale words, then [source token, K local expert ids (-1 = a slot of
another rank), K routing weights (fp32 bits)] — each token crosses each link at most once.

One call on rank r (`SymmMemTransport` methods, in order):
  1. `dispatch` (one launch): the destination ranks of a token = its experts // E_local; a row's
     position in the destination's segment for source r = the number of earlier tokens with a
     slot on that rank (computed in `_push_kernel`, no routing launches), so no offsets are
     exchanged. Every row is stored into `recv_rows[r][pos]` on its destination through the peer
     pointer, r's row counts into every peer's `recv_count[r]`, then barrier channel 0.
  2. `unpack`: received rows -> exact bf16 tokens (`x_dq`), K local expert ids (-1 for other ranks'
     slots and past a segment's count) and weights per row; the caller runs
     `compute.compute_slots` on them (K slots per row).
  3. `return_results`: each computed slot (row n, k) goes to `home[source token * K + k]` on its
     source rank; barrier channel 1. The caller combines `home` locally in ascending k.

NOTES: why two barriers suffice. A row segment on rank d is overwritten by the next call's push
only after the pusher passed this call's channel-1 barrier, which d enters after computing on the
rows; `home` on r is written by peers after r entered the next call's channel-0 barrier, i.e.
after r combined. Each barrier is per program: program b of every rank signals program b of every
peer (CAS 0 -> 1, release, system scope, spinning while the previous signal is unconsumed) and
consumes the signals addressed to it (CAS 1 -> 0, acquire) — the pads end every call at zero, which
is what makes graph replay work. The kernel boundary after the barrier publishes every peer's
stores to all later kernels on this rank. Spins are bounded (`spin_limit` iterations); a timeout
records `1 + 64 * channel + peer` in the rank's error word instead of hanging (`check_errors`).

Under the Triton interpreter (CPU tests) R simulated ranks live in one process
(`simulated_transports`); their barriers are split into a signal launch and a wait launch
(`split_barriers=True`) so the ranks can be stepped in turn.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .. import formats
from . import tma_copy
from ..kernels.numerics import dequant_fp8_tile, f32_to_bf16_bits

__all__ = ["SymmLayout", "SymmMemTransport", "SymmMemTimeout", "simulated_transports", "symm_mem_available"]

NUM_CHANNELS = 2
DEFAULT_SPIN_LIMIT = 1 << 24      # ~10-30 s of remote CAS round trips before a barrier gives up
# NOTES: up to this many slots (tokens x top-k) per rank the fused return (GEMM2 stores into the
# sources) is faster than a separate return pass; at many tokens the epilogue's scattered remote
# stores stall GEMM2. dsv3, layer in a CUDA graph: EP 2 (2 x H200) fused -15 / -28 / -44 / -14 µs at
# 128 / 256 / 512 / 1024 tokens per rank, +1.5 ms at 4096; EP 4 (4 x H200) -22 µs at 128, +4.9 ms at
# 4096 (BENCHMARKS.md). The loss grows with the ranks, so the switch sits at 256 dsv3 tokens.
# Above it, on Hopper (sm_90), the fused return by TMA stores (GEMM2's epilogue issues them and goes on: nothing
# stalls) beats the separate return pass: EP 4 (4 x H200) layer -1.3% at 4096, but +4% at 128 tokens,
# hence SM stores below the switch (benchmarks/NOTES.md "symm_mem transport", session 14).
FUSED_RETURN_MAX_SLOTS = 2048


def _auto_or_forced(name: str, value: str) -> bool | None:
    """An `auto|1|0` setting: None (decide per call), True or False; a ValueError naming `name` otherwise."""
    settings = {"1": True, "0": False, "auto": None}
    if value not in settings:
        raise ValueError(f"{name}={value!r}: must be one of {sorted(settings)}")
    return settings[value]


def tma_return_setting(value: str) -> bool | None:
    """TMOE_EP_TMA: "1" the results go back by TMA stores (`tma_copy`: from GEMM2's epilogue, or a TMA return
    pass), "0" by SM stores, "auto" by TMA above FUSED_RETURN_MAX_SLOTS on sm_90 (`SymmMemTransport.tma_for`)."""
    return _auto_or_forced("TMOE_EP_TMA", value)


def fused_return_setting(value: str) -> bool | None:
    """TMOE_EP_FUSED_RETURN: "1" always fused, "0" always a separate return pass, "auto" per call."""
    return _auto_or_forced("TMOE_EP_FUSED_RETURN", value)


class SymmMemTimeout(RuntimeError):
    """A barrier of the symm_mem transport gave up waiting for a peer."""


@dataclass(frozen=True)
class SymmLayout:
    """Word offsets of the regions in the symmetric buffer (same on every rank)."""
    num_ranks: int
    num_max_tokens: int     # T_max
    num_topk: int           # K
    hidden: int
    max_blocks: int

    @property
    def cap_rows(self) -> int:      # rows one source may send one destination: one per token
        return max(self.num_max_tokens, 1)

    @property
    def cap_slots(self) -> int:     # this rank's slots (home rows)
        return max(self.num_max_tokens * self.num_topk, 1)

    @property
    def meta_words(self) -> int:    # source token, K local expert ids (-1: not this rank), K weights
        return 1 + 2 * self.num_topk

    @property
    def x_words(self) -> int:
        return self.hidden // 4

    @property
    def sf_words(self) -> int:
        return formats.packed_scale_words(self.hidden)

    @property
    def row_words(self) -> int:     # 16-byte aligned rows: vector stores over NVLink
        return (self.x_words + self.sf_words + self.meta_words + 3) // 4 * 4

    def _regions(self) -> dict:
        """name -> (word offset, words); every region starts 16-byte aligned."""
        t, k = self.num_max_tokens, self.num_topk
        sizes = [("x", t * self.x_words), ("x_sf", t * self.sf_words), ("topk_idx", 2 * t * k),
                 ("topk_weights", t * k), ("recv_rows", self.num_ranks * self.cap_rows * self.row_words),
                 ("home", self.cap_slots * self.hidden // 2), ("recv_count", self.num_ranks),
                 ("signals", NUM_CHANNELS * self.max_blocks * self.num_ranks)]
        out, off = {}, 0
        for name, words in sizes:
            out[name] = (off, words)
            off += (words + 3) // 4 * 4
        out["total"] = (off, 0)
        return out

    def offset(self, name: str) -> int:
        return self._regions()[name][0]

    def view(self, words: torch.Tensor, name: str) -> torch.Tensor:
        off, n = self._regions()[name]
        return words[off: off + n]

    @property
    def total_words(self) -> int:
        return self.offset("total")


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _cas_each(slots, dummy, err_ptr, spin_limit, code, expected: tl.constexpr, SEM: tl.constexpr,
              R: tl.constexpr):
    """CAS expected -> 1 - expected on each of R slots (one lane per peer) until all succeeded or
    `spin_limit` rounds passed; finished lanes are pointed at `dummy` (a local 0 word that never
    matches). On a timeout, `code + first unfinished peer` goes into the error word."""
    peers = tl.arange(0, R)
    pending = peers >= 0
    it = 0
    while (tl.sum(pending.to(tl.int32), axis=0) > 0) & (it < spin_limit):
        old = tl.atomic_cas(tl.where(pending, slots, dummy), tl.where(pending, expected, -1),
                            tl.where(pending, 1 - expected, -1), sem=SEM, scope="sys")
        pending = pending & (old != expected)
        it += 1
    if tl.sum(pending.to(tl.int32), axis=0) > 0:
        tl.atomic_max(err_ptr, code + tl.min(tl.where(pending, peers, R), axis=0))


@triton.jit
def _barrier(peer_ptrs, err_ptr, rank, channel, spin_limit, signal_off,
             R: tl.constexpr, MAX_BLOCKS: tl.constexpr, SIGNAL: tl.constexpr, WAIT: tl.constexpr):
    """Program b of this rank <-> program b of every rank (see the module NOTES)."""
    pid = tl.program_id(0)
    peers = tl.arange(0, R)
    slot0 = signal_off.to(tl.int64) + (channel * MAX_BLOCKS + pid) * R
    dummy = err_ptr + 1                    # a local word that stays 0: the target of finished lanes
    code = 1 + 64 * channel
    if SIGNAL:
        tl.debug_barrier()                 # every thread's stores of this program happen before the release
        remote = (tl.load(peer_ptrs + peers) + (slot0 + rank) * 4).to(tl.pointer_type(tl.int32))
        _cas_each(remote, dummy, err_ptr, spin_limit, code, 0, "release", R)     # signal: 0 -> 1 on each peer
    if WAIT:
        mine = (tl.load(peer_ptrs + rank) + (slot0 + peers) * 4).to(tl.pointer_type(tl.int32))
        _cas_each(mine, dummy, err_ptr, spin_limit, code, 1, "acquire", R)       # consume: 1 -> 0 from each peer
        tl.debug_barrier()


@triton.jit
def _segment_of(j, bounds, lanes, NUM_SEG: tl.constexpr):
    """For positions j [ROWS] in a concatenation of segments with start offsets `bounds`
    (lanes 0..NUM_SEG, bounds[0] = 0, non-decreasing): (segment, position inside it)."""
    started = (lanes[None, :] <= NUM_SEG) & (bounds[None, :] <= j[:, None])
    seg = tl.sum(((lanes[None, :] >= 1) & started).to(tl.int32), axis=1)
    return seg, j - tl.max(tl.where(started, bounds[None, :], 0), axis=1)


@triton.jit
def _destinations(idx_ptr, tok, tok_ok, num_local_experts, K: tl.constexpr, K_PAD: tl.constexpr,
                  R: tl.constexpr):
    """Tokens tok [N] -> (expert ids [N, K_PAD] (-1 masked), destination rank per slot [N, K_PAD]
    (R when masked), hit [N, R]: 1 where the token has at least one slot on that rank)."""
    kk = tl.arange(0, K_PAD)
    e = tl.load(idx_ptr + tok[:, None].to(tl.int64) * K + kk[None, :], mask=tok_ok[:, None] & (kk < K)[None, :],
                other=-1)
    d = tl.where(e >= 0, e // num_local_experts, R).to(tl.int32)
    peers = tl.arange(0, R)
    hit = tl.max((d[:, :, None] == peers[None, None, :]).to(tl.int32), axis=1)
    return e, d, hit


@triton.jit
def _column(tile, peers, dest: tl.constexpr):
    """Column `dest` of a [ROWS, R] tile (one lane per peer)."""
    return tl.sum(tl.where(peers[None, :] == dest, tile, 0), axis=1)


@triton.jit
def _row_pointer(row_at, peers, dest: tl.constexpr):
    """Column `dest` of a [ROWS, R] tile of byte addresses, as 16-byte aligned int32 row pointers."""
    addr = _column(row_at, peers, dest)
    # NOTES: peer bases and row starts are 16-byte aligned (rows are a multiple of 4 words); the
    # hint lets the compiler use 16-byte stores over NVLink.
    return tl.multiple_of(addr.to(tl.pointer_type(tl.int32)), 16)


@triton.jit
def _push_kernel(x_ptr, sf_ptr, idx_ptr, w_ptr, peer_ptrs, err_ptr, num_tokens, rank, num_local_experts, cap_rows,
                 spin_limit, rows_off, count_off, signal_off,
                 K: tl.constexpr, K_PAD: tl.constexpr, X_WORDS: tl.constexpr, SF_WORDS: tl.constexpr,
                 ROW_WORDS: tl.constexpr, R: tl.constexpr, MAX_BLOCKS: tl.constexpr, ROWS: tl.constexpr,
                 PREFIX: tl.constexpr, BLOCK_W: tl.constexpr, SF_PAD: tl.constexpr, SIGNAL: tl.constexpr,
                 WAIT: tl.constexpr):
    """One row per (token, destination rank) with at least one of the token's slots: program b
    takes tokens [b * S, (b + 1) * S) (S = ceil(T / programs)), ROWS tokens at a time.

    NOTES: no routing launches. A row's position in its destination's segment is the number of
    earlier tokens with a slot on that rank: each program counts those before its range
    (PREFIX-token vector loads of topk_idx, L2-resident), then ranks its own tokens step by step.
    Consecutive tokens go to different ranks, so every program feeds every peer link at once (a
    grid-stride copy of destination-sorted rows was ~1.7x slower on 4 x H200). The last program
    ends with the totals and writes them into every peer's recv_count[rank].
    """
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    per_program = tl.cdiv(num_tokens, num_programs)
    start = tl.minimum(pid * per_program, num_tokens)
    end = tl.minimum(start + per_program, num_tokens)
    peers = tl.arange(0, R)
    base = tl.zeros([R], dtype=tl.int32)
    for c0 in range(0, start, PREFIX):
        tok = c0 + tl.arange(0, PREFIX)
        _, _, hit = _destinations(idx_ptr, tok, tok < start, num_local_experts, K, K_PAD, R)
        base += tl.sum(hit, axis=0)
    r_ids = tl.arange(0, ROWS)
    kk = tl.arange(0, K_PAD)
    words = tl.arange(0, BLOCK_W)
    sf_cols = tl.arange(0, SF_PAD)
    # Row segment of this rank on every peer (int64 addresses, [R]); a row pointer per destination is
    # picked out of [ROWS, R] tiles below, so no peer pointer is re-read behind a remote store.
    seg_base = tl.load(peer_ptrs + peers) + (rows_off.to(tl.int64) + rank * cap_rows * ROW_WORDS) * 4
    # NOTES: rank among this step's earlier tokens by a pairwise mask; tl.cumsum over a [ROWS, 2]
    # tile trips an assertion in Triton 3.6's scan lowering (R = 2 on sm_90).
    earlier = (r_ids[None, :] < r_ids[:, None]).to(tl.int32)                     # [ROWS, ROWS]
    for c0 in range(start, end, ROWS):
        tok = c0 + r_ids
        tok_ok = tok < end
        tok64 = tok.to(tl.int64)
        # NOTES: each token's payload is loaded once (before the routing, on which it does not depend)
        # and stored to each of its destinations: at small T the push is a chain of load latencies,
        # and re-loading the row per destination behind the previous destination's stores made it
        # 2R + 1 latencies long instead of 2.
        x_row = x_ptr + tok64[:, None] * X_WORDS + words[None, :]
        x_first = tl.load(x_row, mask=tok_ok[:, None] & (words < X_WORDS)[None, :])
        sm = (sf_cols < SF_WORDS)[None, :]
        sf = tl.load(sf_ptr + tok64[:, None] * SF_WORDS + sf_cols[None, :], mask=tok_ok[:, None] & sm)
        w = tl.load(w_ptr + tok64[:, None] * K + kk[None, :], mask=tok_ok[:, None] & (kk < K)[None, :], other=0.0)
        e, d, hit = _destinations(idx_ptr, tok, tok_ok, num_local_experts, K, K_PAD, R)
        pos = base[None, :] + tl.sum(earlier[:, :, None] * hit[None, :, :], axis=1)   # [ROWS, R]
        base += tl.sum(hit, axis=0)
        row_at = seg_base[None, :] + pos.to(tl.int64) * (ROW_WORDS * 4)               # [ROWS, R] byte addresses
        for c in tl.static_range(0, X_WORDS, BLOCK_W):
            cm = (c + words < X_WORDS)[None, :]
            if c == 0:
                v = x_first
            else:
                v = tl.load(x_row + c, mask=tok_ok[:, None] & cm)
            for dest in tl.static_range(R):
                row = _row_pointer(row_at, peers, dest)
                ok = _column(hit, peers, dest) > 0
                tl.store(row[:, None] + c + words[None, :], v, mask=ok[:, None] & cm)
        wbits = w.to(tl.int32, bitcast=True)
        for dest in tl.static_range(R):
            row = _row_pointer(row_at, peers, dest)
            ok = _column(hit, peers, dest) > 0
            tl.store(row[:, None] + X_WORDS + sf_cols[None, :], sf, mask=ok[:, None] & sm)
            meta = row + X_WORDS + SF_WORDS
            tl.store(meta, tok, mask=ok)
            local = tl.where(d == dest, e - dest * num_local_experts, -1).to(tl.int32)
            km = ok[:, None] & (kk < K)[None, :]
            tl.store(meta[:, None] + 1 + kk[None, :], local, mask=km)
            tl.store(meta[:, None] + 1 + K + kk[None, :], wbits, mask=km)
    if pid == num_programs - 1:
        # Totals, into every peer's recv_count[rank] (also 0: the peer must not keep stale counts).
        tl.store((tl.load(peer_ptrs + peers) + (count_off.to(tl.int64) + rank) * 4).to(tl.pointer_type(tl.int32)),
                 base)
    _barrier(peer_ptrs, err_ptr, rank, 0, spin_limit, signal_off, R, MAX_BLOCKS, SIGNAL, WAIT)


@triton.jit
def _received(count_ptr, R: tl.constexpr, R1_PAD: tl.constexpr):
    """Segment start offsets of the received rows when packed back to back, and their total."""
    lanes = tl.arange(0, R1_PAD)
    counts = tl.load(count_ptr + lanes, mask=lanes < R, other=0)
    incl = tl.cumsum(counts, axis=0)
    return lanes, incl - counts, tl.sum(counts, axis=0)


@triton.jit
def _unpack_kernel(rows_ptr, count_ptr, xdq_ptr, idx_ptr, w_ptr, addr_ptr, code_ptr, peer_ptrs, cap_rows, hidden,
                   home_off,
                   K: tl.constexpr, K_PAD: tl.constexpr, X_WORDS: tl.constexpr, SF_WORDS: tl.constexpr,
                   ROW_WORDS: tl.constexpr, OUT_WORDS: tl.constexpr, R: tl.constexpr, R1_PAD: tl.constexpr,
                   BLOCK_N: tl.constexpr, ROWS: tl.constexpr, BLOCK_H: tl.constexpr, SOFT: tl.constexpr,
                   WRITE_ADDR: tl.constexpr, WRITE_CODE: tl.constexpr):
    """Received rows -> local expert ids [N, K] (-1 for other ranks' slots and past each segment's
    count) and weights, and the exact bf16 tokens of the rows that arrived (empty rows not read).
    WRITE_ADDR: also the address of each slot's result row, `home[token * K + k]` on its source
    rank (int64 [N * K]; GEMM2 stores there directly: the fused return); WRITE_CODE: also that row as
    source rank << 32 | token * K + k (int64 [N * K], for GEMM2's TMA stores: tma_copy.PeerRows)."""
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    num_rows = R * cap_rows
    lane = tl.arange(0, BLOCK_N)
    kk = tl.arange(0, K_PAD)
    for n0 in range(pid * BLOCK_N, num_rows, num_programs * BLOCK_N):
        n = n0 + lane
        in_range = n < num_rows
        seg = n // cap_rows
        count = tl.load(count_ptr + seg, mask=in_range, other=0)
        valid = in_range & (n - seg * cap_rows < count)
        meta = rows_ptr + n.to(tl.int64) * ROW_WORDS + X_WORDS + SF_WORDS
        km = valid[:, None] & (kk < K)[None, :]
        out_m = in_range[:, None] & (kk < K)[None, :]
        expert = tl.load(meta[:, None] + 1 + kk[None, :], mask=km, other=-1)
        weight = tl.load(meta[:, None] + 1 + K + kk[None, :], mask=km, other=0)
        tl.store(idx_ptr + n[:, None].to(tl.int64) * K + kk[None, :], expert.to(tl.int64), mask=out_m)
        tl.store(w_ptr + n[:, None].to(tl.int64) * K + kk[None, :], weight.to(tl.float32, bitcast=True), mask=out_m)
        if WRITE_ADDR:
            src_tok = tl.load(meta, mask=valid, other=0).to(tl.int64)
            base = tl.load(peer_ptrs + seg, mask=valid, other=0)
            home_row = (home_off.to(tl.int64) + (src_tok[:, None] * K + kk[None, :]) * OUT_WORDS) * 4
            tl.store(addr_ptr + n[:, None].to(tl.int64) * K + kk[None, :],
                     tl.where(expert >= 0, base[:, None] + home_row, 0), mask=out_m)
            if WRITE_CODE:
                code = (seg.to(tl.int64) << 32)[:, None] + src_tok[:, None] * K + kk[None, :]
                tl.store(code_ptr + n[:, None].to(tl.int64) * K + kk[None, :], tl.where(expert >= 0, code, 0),
                         mask=out_m)
    lanes, starts, total = _received(count_ptr, R, R1_PAD)
    r_ids = tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_H)
    blocks = tl.arange(0, BLOCK_H // 32)
    for j0 in range(pid * ROWS, total, num_programs * ROWS):
        j = j0 + r_ids
        ok = j < total
        seg, pos = _segment_of(j, starts, lanes, R - 1)
        n = (seg * cap_rows + pos).to(tl.int64)
        row_bytes = (rows_ptr + n * ROW_WORDS).to(tl.pointer_type(tl.uint8), bitcast=True)
        row_bytes = tl.multiple_of(row_bytes, 16)
        out_row = tl.multiple_of(xdq_ptr + n * hidden, 16)
        for c in tl.static_range(0, X_WORDS * 4, BLOCK_H):
            m = ok[:, None] & (c + cols < hidden)[None, :]
            q = tl.load(row_bytes[:, None] + c + cols[None, :], mask=m, other=0)
            sb = c // 32 + blocks
            sc = tl.load(row_bytes[:, None] + X_WORDS * 4 + sb[None, :],
                         mask=ok[:, None] & (sb < hidden // 32)[None, :], other=127)
            vals = dequant_fp8_tile(q, sc, ROWS, BLOCK_H, SOFT)
            tl.store(out_row[:, None] + c + cols[None, :], f32_to_bf16_bits(vals, SOFT), mask=m)


@triton.jit
def _return_pairs(j, last, starts, lanes, rows_ptr, peer_ptrs, cap_rows, home_off, K: tl.constexpr,
                  X_WORDS: tl.constexpr, SF_WORDS: tl.constexpr, ROW_WORDS: tl.constexpr, OUT_WORDS: tl.constexpr,
                  R: tl.constexpr):
    """(received row, k) pairs j [ROWS] -> (computed?, result row n * K + k, int32 pointer to its
    `home` row on the source rank)."""
    in_range = j < last
    src, pos = _segment_of(j // K, starts, lanes, R - 1)
    k = j % K
    n = (src * cap_rows + pos).to(tl.int64)
    meta = rows_ptr + n * ROW_WORDS + X_WORDS + SF_WORDS
    # NOTES: the three loads depend only on the pair, so they are in flight together (masking the
    # token and the peer base by the slot's expert made them one latency after it).
    ok = in_range & (tl.load(meta + 1 + k, mask=in_range, other=-1) >= 0)
    src_tok = tl.load(meta, mask=in_range, other=0).to(tl.int64)
    home = tl.load(peer_ptrs + src, mask=in_range, other=0).to(tl.pointer_type(tl.int32)) + home_off.to(tl.int64)
    return ok, n * K + k, tl.multiple_of(home + (src_tok * K + k) * OUT_WORDS, 16)   # 16-byte stores (_row_pointer)


@triton.jit
def _return_kernel(rows_ptr, count_ptr, out_ptr, peer_ptrs, err_ptr, rank, cap_rows, spin_limit, home_off,
                   signal_off, K: tl.constexpr, X_WORDS: tl.constexpr, SF_WORDS: tl.constexpr,
                   ROW_WORDS: tl.constexpr, OUT_WORDS: tl.constexpr, R: tl.constexpr, R1_PAD: tl.constexpr,
                   MAX_BLOCKS: tl.constexpr, ROWS: tl.constexpr, BLOCK_W: tl.constexpr, SIGNAL: tl.constexpr,
                   WAIT: tl.constexpr):
    """Each computed slot of each received row (bf16 [H] = OUT_WORDS int32 at out[n * K + k]) ->
    home[source token * K + k] on its source rank."""
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    lanes, starts, total = _received(count_ptr, R, R1_PAD)
    # NOTES: each program takes a contiguous range of the (received row, k) pairs, so at any
    # moment the programs write to different source ranks (a grid-stride order sends every program
    # to the same peer at once: measured ~1.6x slower on 4 x H200).
    total_pairs = total * K
    per_program = tl.cdiv(total_pairs, num_programs)
    first = pid * per_program
    last = tl.minimum(first + per_program, total_pairs)
    r_ids = tl.arange(0, ROWS)
    words = tl.arange(0, BLOCK_W)
    # NOTES: software-pipelined by one step: the next step's pair loads are issued before this
    # step's result rows are read and stored, so the loop pays one load latency per step, not two.
    ok, slot, dst = _return_pairs(first + r_ids, last, starts, lanes, rows_ptr, peer_ptrs, cap_rows, home_off,
                                  K, X_WORDS, SF_WORDS, ROW_WORDS, OUT_WORDS, R)
    for j0 in range(first, last, ROWS):
        ok_next, slot_next, dst_next = _return_pairs(j0 + ROWS + r_ids, last, starts, lanes, rows_ptr, peer_ptrs,
                                                     cap_rows, home_off, K, X_WORDS, SF_WORDS, ROW_WORDS,
                                                     OUT_WORDS, R)
        for c in tl.static_range(0, OUT_WORDS, BLOCK_W):
            m = ok[:, None] & (c + words < OUT_WORDS)[None, :]
            v = tl.load(out_ptr + slot[:, None] * OUT_WORDS + c + words[None, :], mask=m)
            tl.store(dst[:, None] + c + words[None, :], v, mask=m)
        ok, slot, dst = ok_next, slot_next, dst_next
    _barrier(peer_ptrs, err_ptr, rank, 1, spin_limit, signal_off, R, MAX_BLOCKS, SIGNAL, WAIT)


@triton.jit
def _barrier_kernel(peer_ptrs, err_ptr, rank, channel, spin_limit, signal_off, R: tl.constexpr,
                    MAX_BLOCKS: tl.constexpr, SIGNAL: tl.constexpr, WAIT: tl.constexpr):
    """A barrier on its own (the wait half of a split barrier; the fused return's barrier)."""
    _barrier(peer_ptrs, err_ptr, rank, channel, spin_limit, signal_off, R, MAX_BLOCKS, SIGNAL, WAIT)


# ----------------------------------------------------------------------------- host side
def symm_mem_available(device: torch.device, num_ranks: int) -> tuple[bool, str]:
    """(usable, reason): a CUDA device, a power-of-two group of at most 64 ranks (one barrier lane
    per peer), torch symmetric memory importable. Peers must share an NVLink domain (one node)."""
    if device.type != "cuda":
        return False, f"device {device} is not a CUDA device"
    if num_ranks & (num_ranks - 1) or num_ranks > 64:
        return False, f"the group has {num_ranks} ranks (the symm_mem transport needs a power of two <= 64)"
    try:
        import torch.distributed._symmetric_memory  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return False, f"torch.distributed._symmetric_memory cannot be imported ({exc})"
    return True, "ok"


class SymmMemTransport:
    """Per-rank state of the symm_mem transport (see the module docstring)."""
    name = "symm_mem"

    def __init__(self, layout: SymmLayout, rank: int, num_experts: int, words: torch.Tensor,
                 peer_ptrs: torch.Tensor, handle=None, split_barriers: bool = False):
        self.layout = layout
        self.rank, self.num_ranks = rank, layout.num_ranks
        self.num_experts = num_experts
        self.num_local_experts = num_experts // layout.num_ranks
        self.words = words                       # this rank's symmetric allocation (int32)
        self.peer_ptrs = peer_ptrs               # int64 [R] base addresses (device)
        self.handle = handle                     # keeps the rendezvous alive
        self.split_barriers = split_barriers
        dev = words.device
        self.error = torch.zeros(2, dtype=torch.int32, device=dev)     # [error word, dummy word]
        lay = layout
        n = lay.num_ranks * lay.cap_rows
        t, k = lay.num_max_tokens, lay.num_topk
        # The caller-filled inputs (MegaMoEBuffer exposes them as x, x_sf, topk_idx, topk_weights).
        self.x = lay.view(words, "x").view(torch.float8_e4m3fn).view(t, lay.hidden)
        self.x_sf = lay.view(words, "x_sf").view(t, lay.sf_words)
        self.topk_idx = lay.view(words, "topk_idx").view(torch.int64).view(t, k)
        self.topk_weights = lay.view(words, "topk_weights").view(torch.float32).view(t, k)
        self.recv_rows = lay.view(words, "recv_rows").view(n, lay.row_words)
        self.home = lay.view(words, "home").view(torch.int16).view(lay.cap_slots, lay.hidden)
        self.recv_count = lay.view(words, "recv_count")
        self.signals = lay.view(words, "signals")
        self.recv_idx = torch.empty((n, k), dtype=torch.int64, device=dev)
        self.recv_weight = torch.empty((n, k), dtype=torch.float32, device=dev)
        # Fused return: GEMM2 writes each result straight into its source rank's `home` through this
        # address table, so the results cross NVLink while GEMM2 runs (no separate return pass).
        # True / False forces a mode; None (TMOE_EP_FUSED_RETURN unset or "auto") picks per call
        # (`fused_for`). The modes may differ between ranks: both end in barrier channel 1.
        self.fused_return = fused_return_setting(os.environ.get("TMOE_EP_FUSED_RETURN", "auto"))
        self.home_addr = torch.zeros(max(n * k, 1), dtype=torch.int64, device=dev)
        self.home_code = torch.zeros(max(n * k, 1), dtype=torch.int64, device=dev)
        self.spin_limit = int(os.environ.get("TMOE_EP_SPIN_LIMIT", DEFAULT_SPIN_LIMIT))
        self.soft = not words.is_cuda
        # TMA (dispatch/tma_copy.py): the results go back by TMA stores — from GEMM2's epilogue (fused return,
        # Gluon GEMM2) or the return pass — instead of SM stores. True / False forces it; None: `tma_for`.
        self.tma_return = tma_return_setting(os.environ.get("TMOE_EP_TMA", "auto"))
        self.tma_available = not self.soft and handle is not None and tma_copy.tma_copy_available(dev)
        self.tma_stages = int(os.environ.get("TMOE_EP_TMA_STAGES", 4))    # rows in flight per program
        self._home_descs = None
        self._peer_rows = None
        self.sim_homes = None        # simulated ranks: every rank's flat `home` (simulated_transports)
        self.r1_pad = triton.next_power_of_2(self.num_ranks + 1)
        self.k_pad = triton.next_power_of_2(layout.num_topk)
        # Rows per program step: several rows in flight hide the dependent loads (slot -> token -> row).
        self.rows_per_step = int(os.environ.get("TMOE_EP_ROWS", 2 if self.soft else 8))
        self.num_warps = 1 if self.soft else int(os.environ.get("TMOE_EP_WARPS", 4))
        if self.soft:
            self.grid = min(lay.max_blocks, 4)
        else:
            sms = torch.cuda.get_device_properties(dev).multi_processor_count
            self.grid = min(lay.max_blocks, int(os.environ.get("TMOE_EP_GRID", sms)))

    # ------------------------------------------------------------------ phases
    def _flags(self):
        return dict(SIGNAL=True, WAIT=not self.split_barriers)

    def wait(self, channel: int) -> None:
        """Second half of a split barrier (simulated ranks only; fused into the kernels otherwise)."""
        if self.split_barriers:
            self._barrier(channel, signal=False, wait=True)

    def _barrier(self, channel: int, signal: bool, wait: bool) -> None:
        _barrier_kernel[(self.grid,)](self.peer_ptrs, self.error, self.rank, channel, self.spin_limit,
                                      self.layout.offset("signals"), R=self.num_ranks,
                                      MAX_BLOCKS=self.layout.max_blocks, SIGNAL=signal, WAIT=wait)

    def dispatch(self, x_fp8: torch.Tensor, x_sf: torch.Tensor, topk_idx: torch.Tensor,
                 topk_weights: torch.Tensor) -> None:
        """Send each token once to every rank owning one of its experts (x_fp8/x_sf may hold more rows than T)."""
        lay = self.layout
        t, k = topk_idx.shape
        x_words = x_fp8.view(torch.uint8).view(torch.int32)
        block_w = min(triton.next_power_of_2(lay.x_words), 256 if self.soft else 2048)
        _push_kernel[(self.grid,)](
            x_words, x_sf, topk_idx, topk_weights, self.peer_ptrs, self.error, t, self.rank,
            self.num_local_experts, lay.cap_rows, self.spin_limit, lay.offset("recv_rows"),
            lay.offset("recv_count"), lay.offset("signals"), K=k, K_PAD=self.k_pad, X_WORDS=lay.x_words,
            SF_WORDS=lay.sf_words,
            ROW_WORDS=lay.row_words, R=self.num_ranks, MAX_BLOCKS=lay.max_blocks, ROWS=self.rows_per_step,
            PREFIX=32 if self.soft else 128, BLOCK_W=block_w, SF_PAD=triton.next_power_of_2(lay.sf_words),
            num_warps=self.num_warps, **self._flags())

    def fused_for(self, num_slots: int) -> bool:
        """Return the results from GEMM2's epilogue (fused) in a call where this rank sends `num_slots`
        (tokens x top-k) slots? The forced mode if one is set, else fused up to FUSED_RETURN_MAX_SLOTS."""
        if self.fused_return is not None:
            return self.fused_return
        return num_slots <= FUSED_RETURN_MAX_SLOTS or self.tma_for(num_slots)

    def tma_for(self, num_slots: int) -> bool:
        """Send the results by TMA stores in a call where this rank sends `num_slots` slots? The forced mode
        if one is set, else above FUSED_RETURN_MAX_SLOTS where TMA copies work (sm_90, real ranks). Ranks may
        differ: every mode ends in the same barrier and writes the same rows."""
        if self.tma_return is not None:
            return self.tma_return
        return self.tma_available and num_slots > FUSED_RETURN_MAX_SLOTS

    def peer_rows(self) -> tma_copy.PeerRows:
        """GEMM2's store targets for the fused return by TMA (after `unpack(write_addr=True)`)."""
        if self._peer_rows is None:
            lay = self.layout
            self._peer_rows = tma_copy.PeerRows(self.home_code, self.home_addr,
                                                [h.view(lay.cap_slots, lay.hidden) for h in self._homes()])
        return self._peer_rows

    def unpack(self, x_dq: torch.Tensor, write_addr: bool = False,
               write_code: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Received rows -> x_dq (int16 bf16 bits [>= R*T_max, H]); returns (idx [N, K], weight [N, K])
        with N = R*T_max rows (local expert ids; -1 for slots of other ranks and for empty rows).
        `write_addr`: also fill `home_addr` (each slot's result row on its source rank: the fused return);
        `write_code` (with it): also `home_code` (the same rows as rank << 32 | row: the fused return by TMA)."""
        self.wait(0)
        lay = self.layout
        block_h = min(triton.next_power_of_2(lay.hidden), 256 if self.soft else 1024)
        _unpack_kernel[(self.grid,)](self.recv_rows, self.recv_count, x_dq, self.recv_idx, self.recv_weight,
                                     self.home_addr, self.home_code, self.peer_ptrs, lay.cap_rows, lay.hidden,
                                     lay.offset("home"),
                                     K=lay.num_topk, K_PAD=self.k_pad, X_WORDS=lay.x_words, SF_WORDS=lay.sf_words,
                                     ROW_WORDS=lay.row_words, OUT_WORDS=lay.hidden // 2, R=self.num_ranks,
                                     R1_PAD=self.r1_pad, BLOCK_N=64 if self.soft else 256, ROWS=self.rows_per_step,
                                     BLOCK_H=block_h, SOFT=self.soft, WRITE_ADDR=write_addr,
                                     WRITE_CODE=write_addr and write_code,
                                     num_warps=self.num_warps)
        return self.recv_idx, self.recv_weight

    def results_sent(self) -> None:
        """Fused return: GEMM2 stored every result in its source's `home`; barrier channel 1 (the
        signal half only for simulated ranks)."""
        self._barrier(1, signal=True, wait=not self.split_barriers)

    def _homes(self) -> list:
        """Every rank's `home` region (int16, flat) as a tensor on this device (peer memory over NVLink)."""
        lay = self.layout
        if self.handle is None:      # simulated ranks: the other ranks' buffers are in this process
            return list(self.sim_homes)
        off = lay.offset("home")
        homes = [self.handle.get_buffer(p, (lay.cap_slots * lay.hidden,), torch.int16, off * 2)
                 for p in range(self.num_ranks)]
        for p, home in enumerate(homes):     # get_buffer's offset is in elements of its dtype
            if home.data_ptr() != self.handle.buffer_ptrs[p] + off * 4:
                raise RuntimeError(f"symm_mem: rank {p}'s home view is not at its buffer offset {off * 4} B")
        return homes

    def home_descriptors(self) -> list:
        """TMA descriptors over every rank's `home`, one row per box (built once: the buffers do not move)."""
        if self._home_descs is None:
            lay = self.layout
            self._home_descs = [tma_copy.row_descriptor(h.view(lay.cap_slots, lay.hidden)) for h in self._homes()]
        return self._home_descs

    def return_results(self, slot_out: torch.Tensor, tma: bool = False) -> None:
        """Send every computed slot (slot_out int16 [>= R*T_max*K, H], row n*K + k) to its source rank's `home`
        (`tma`: by TMA row copies, `tma_copy.return_rows`)."""
        lay = self.layout
        out_words = lay.hidden // 2
        if tma and not self.soft:      # simulated ranks (CPU): the Triton return pass
            tma_copy.return_rows(self.recv_rows, self.recv_count, slot_out, self.home_descriptors(), lay.cap_rows,
                                 lay.num_topk, lay.x_words + lay.sf_words, self.grid, self.tma_stages)
            self._barrier(1, signal=True, wait=not self.split_barriers)
            return
        _return_kernel[(self.grid,)](
            self.recv_rows, self.recv_count, slot_out.view(torch.int32), self.peer_ptrs, self.error, self.rank,
            lay.cap_rows, self.spin_limit, lay.offset("home"), lay.offset("signals"), K=lay.num_topk,
            X_WORDS=lay.x_words,
            SF_WORDS=lay.sf_words, ROW_WORDS=lay.row_words, OUT_WORDS=out_words, R=self.num_ranks,
            R1_PAD=self.r1_pad, MAX_BLOCKS=lay.max_blocks, ROWS=self.rows_per_step,
            BLOCK_W=min(triton.next_power_of_2(out_words), 256 if self.soft else 2048),
            num_warps=self.num_warps, **self._flags())

    def finish_return(self) -> torch.Tensor:
        """Wait for the results (simulated ranks); returns `home` (int16 [T_max*K, H], by slot)."""
        self.wait(1)
        return self.home

    # ------------------------------------------------------------------ health
    def error_code(self) -> int:
        """The error word (host read: syncs). 0 = every barrier completed."""
        return int(self.error[0].item())

    def describe_error(self, code: int, rank: int | None = None) -> str:
        """The error word `code` of `rank` (default: this rank) in words."""
        channel, peer = (code - 1) // 64, (code - 1) % 64
        phase = "dispatch" if channel == 0 else "combine"
        return (f"rank {self.rank if rank is None else rank}: the symm_mem {phase} barrier timed out waiting "
                f"for rank {peer} ({self.spin_limit} spins; TMOE_EP_SPIN_LIMIT). Did every rank call "
                "fp8_fp4_mega_moe (or replay the graph) the same number of times?")

    def check_errors(self) -> None:
        """Raise SymmMemTimeout if a barrier of an earlier call timed out (then clears the word)."""
        code = self.error_code()
        if code:
            self.error.zero_()
            raise SymmMemTimeout(self.describe_error(code))

    def signals_clean(self) -> bool:
        return bool((self.signals == 0).all())


def make_layout(num_ranks: int, num_max_tokens_per_rank: int, num_topk: int, hidden: int,
                max_blocks: int = 160) -> SymmLayout:
    return SymmLayout(num_ranks, num_max_tokens_per_rank, num_topk, hidden, max_blocks)


def create_transport(group, num_experts: int, num_max_tokens_per_rank: int, num_topk: int, hidden: int,
                     device: torch.device) -> SymmMemTransport:
    """Collective: allocate + rendezvous this rank's symmetric buffer (CUDA backend, no multicast)."""
    import torch.distributed as dist
    import torch.distributed._symmetric_memory as symm_mem
    layout = make_layout(group.size(), num_max_tokens_per_rank, num_topk, hidden)
    words = symm_mem.empty(layout.total_words, dtype=torch.int32, device=device)
    handle = symm_mem.rendezvous(words, group)
    peer_ptrs = torch.tensor(handle.buffer_ptrs, dtype=torch.int64, device=device)
    layout.view(words, "recv_count").zero_()   # counts and signal pads start at zero
    layout.view(words, "signals").zero_()
    torch.cuda.synchronize(device)
    dist.barrier(group=group)                  # no peer signals before every pad is zeroed
    return SymmMemTransport(layout, group.rank(), num_experts, words, peer_ptrs, handle)


def simulated_transports(num_ranks: int, num_experts: int, num_max_tokens_per_rank: int, num_topk: int,
                         hidden: int, device="cpu") -> list[SymmMemTransport]:
    """R ranks in one process (CPU tests under the interpreter): plain tensors as the 'symmetric'
    buffers, every rank's peer pointers are their addresses, barriers split into signal / wait."""
    layout = make_layout(num_ranks, num_max_tokens_per_rank, num_topk, hidden, max_blocks=8)
    buffers = [torch.zeros(layout.total_words, dtype=torch.int32, device=device) for _ in range(num_ranks)]
    ptrs = torch.tensor([b.data_ptr() for b in buffers], dtype=torch.int64, device=device)
    transports = [SymmMemTransport(layout, r, num_experts, buffers[r], ptrs.clone(), split_barriers=True)
                  for r in range(num_ranks)]
    for tr in transports:
        tr.sim_homes = [layout.view(b, "home").view(torch.int16) for b in buffers]
    return transports
