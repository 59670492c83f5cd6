"""Where does symm_mem dispatch/combine time go? One run on R GPUs, all numbers from the same process group:

  * `copy`: a plain block copy of the same off-rank bytes to every peer (the NVLink ceiling for Triton stores);
  * `tma`: the same copy of the combine's rows by TMA row copies (`dispatch/tma_copy.py`), push and pull;
  * `nccl`: all_to_all_single of the same bytes;
  * `push` (= dispatch) / `return`: the transport's kernels for several (rows per step, warps, programs);
    the return pass by TMA row copies (`return_tma_*`) for several (programs, rows in flight);
  * the copies use a symmetric scratch of their own, sized for the bytes moved;
  * dispatch / combine as the layer runs them;
  * with --base OLD_SYMM_MEM_PY: an older version of `tmoe/dispatch/symm_mem.py` (e.g. from
    `git show REV:tmoe/dispatch/symm_mem.py`) on the same symmetric buffer, its push / return timed
    alternately with the current ones (an A/B in one process group).

    python benchmarks/sweep_ep_copy.py --ranks 4 --tokens 128,4096 --json out.json
    python benchmarks/sweep_ep_copy.py --ranks 4 --tokens 1,128,4096 --no-ceilings --base /tmp/old_symm_mem.py
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import itertools
import json
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ep import _graph_us, token_rows_per_rank  # noqa: E402
from tmoe.autotune.timing import time_eager  # noqa: E402
from tmoe.dispatch import tma_copy  # noqa: E402
from tmoe.workloads import WORKLOADS, make_routing  # noqa: E402


@triton.jit
def _block_copy_kernel(local_ptr, peer_ptrs, remote_off, words_per_peer, rank, R: tl.constexpr, BLOCK: tl.constexpr,
                       PULL: tl.constexpr):
    """Rank r moves words_per_peer int32 to (push) or from (pull) every peer p != r, at
    remote_off + r * words_per_peer there; grid-stride, so all programs work on one peer at a time."""
    pid = tl.program_id(0)
    npg = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    total = (R - 1) * words_per_peer
    for i0 in range(pid * BLOCK, total, npg * BLOCK):
        j = i0 // words_per_peer
        peer = j + (j >= rank).to(tl.int32)
        w = i0 - j * words_per_peer + offs
        m = w < words_per_peer
        remote = tl.load(peer_ptrs + peer).to(tl.pointer_type(tl.int32)) + remote_off + rank * words_per_peer
        remote = tl.multiple_of(remote, 16)
        local = local_ptr + j * words_per_peer
        if PULL:
            tl.store(local + w, tl.load(remote + w, mask=m), mask=m)
        else:
            tl.store(remote + w, tl.load(local + w, mask=m), mask=m)


def _load_base(path: str):
    """An older symm_mem.py as a module of its own (its package-relative imports pointed at tmoe)."""
    src = open(path).read().replace("from .. import ", "from tmoe import ").replace("from ..", "from tmoe.")
    copy = os.path.join(tempfile.mkdtemp(), "base_symm_mem.py")     # triton.jit reads the source file
    with open(copy, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("base_symm_mem", copy)
    module = importlib.util.module_from_spec(spec)
    sys.modules["base_symm_mem"] = module        # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _eager_us(fn, reps=10) -> float:
    return time_eager(fn, reps=reps, warmup=1, before=dist.barrier)


def _rank(rank, world, init_file, args):
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=300))
    import torch.distributed._symmetric_memory as symm_mem

    import tmoe
    from tmoe.kernels.combine import combine
    from tmoe.layer import fill_buffer
    dev = torch.device("cuda", rank)
    wl = WORKLOADS[args.workload]
    e, k, h, i = wl.num_experts, wl.topk, wl.hidden, wl.intermediate
    tokens = [int(t) for t in args.tokens.split(",")]
    buf = tmoe.get_symm_buffer_for_mega_moe(dist.group.WORLD, e, max(tokens), k, h, i, device=dev, backend="triton",
                                            transport="symm_mem")
    sm = buf.symm
    base_tr = None
    if args.base:
        base = _load_base(args.base)
        base_tr = base.SymmMemTransport(sm.layout, sm.rank, sm.num_experts, sm.words, sm.peer_ptrs, sm.handle)
    rows = []
    for t in tokens:
        idx, tw = make_routing(t, e, k, "uniform", seed=1000 * rank + t, device=dev)
        fill_buffer(buf, torch.randn(t, h, device=dev).to(torch.bfloat16), idx, tw)
        got = buf.transport_impl.dispatch(buf.x[:t], buf.x_sf[:t], buf.topk_idx[:t], buf.topk_weights[:t])
        disp_send, disp_recv = token_rows_per_rank(idx, e // world, world)     # dispatch: rows per (token, rank)
        offrank = {"dispatch": sum(c for r, c in enumerate(disp_send) if r != rank),
                   "combine": sum(c for r, c in enumerate(got.recv_counts) if r != rank)}     # one per slot
        row_bytes = sm.layout.row_words * 4
        res = {"tokens": t, "offrank_rows": offrank["dispatch"], "offrank_slots_back": offrank["combine"]}
        # ceilings: plain block copy and NCCL of the same off-rank bytes
        for what, width in ((("dispatch", row_bytes), ("combine", 2 * h)) if args.ceilings else ()):
            words_per_peer = max(offrank[what] // (world - 1), 1) * width // 4 // 4 * 4
            # the symmetric scratch must have the same size on every rank: the largest share
            wpp = torch.tensor([words_per_peer], device=dev)
            dist.all_reduce(wpp, op=dist.ReduceOp.MAX)
            words_per_peer = int(wpp.item())
            src = torch.zeros((world - 1) * words_per_peer, dtype=torch.int32, device=dev)
            # A symmetric scratch of its own: the copies must not run past the layer buffer's regions.
            scratch = symm_mem.empty(world * words_per_peer, dtype=torch.int32, device=dev)
            handle = symm_mem.rendezvous(scratch, dist.group.WORLD)
            scratch_ptrs = torch.tensor(handle.buffer_ptrs, dtype=torch.int64, device=dev)
            variants = (itertools.product(("push", "pull"), (132, 264, 528), (2048, 8192), (4, 8)) if args.copies_only
                        else [("push", 528, 8192, 8)])
            for kern, grid, block, warps in variants:
                fn = lambda: _block_copy_kernel[(grid,)](  # noqa: E731
                    src, scratch_ptrs, 0, words_per_peer, rank, R=world, BLOCK=block, PULL=kern == "pull",
                    num_warps=warps)
                res[f"{kern}copy_{what}_g{grid}_b{block}_w{warps}_us"] = _graph_us(fn, 10)
            if what == "combine" and tma_copy.tma_copy_available(dev):
                rows_per_peer = words_per_peer * 4 // width
                tsrc = torch.zeros((world - 1) * rows_per_peer, h, dtype=torch.int16, device=dev)
                tscratch = symm_mem.empty(world * rows_per_peer * h, dtype=torch.int16, device=dev)
                thandle = symm_mem.rendezvous(tscratch, dist.group.WORLD)
                peer_rows = [thandle.get_buffer(p, (world * rows_per_peer, h), torch.int16) for p in range(world)]
                for pull, grid, stages in itertools.product((False, True), (132, 264), (4, 8)):
                    fn = lambda: tma_copy.block_rows(tsrc, peer_rows, rows_per_peer, rank, grid, stages,  # noqa: E731
                                                     pull=pull)
                    res[f"tma{'pull' if pull else 'push'}_{what}_g{grid}_s{stages}_us"] = _graph_us(fn, 10)
            dist.barrier()
            sc, rc = (disp_send, disp_recv) if what == "dispatch" else (got.recv_counts, got.send_counts)
            send = torch.empty(sum(sc), width, dtype=torch.uint8, device=dev)
            recv = torch.empty(sum(rc), width, dtype=torch.uint8, device=dev)
            res[f"nccl_{what}_us"] = _eager_us(lambda: dist.all_to_all_single(recv, send, rc, sc))
        if args.copies_only:
            rows.append(res)
            continue
        shipped = (sm.rows_per_step, sm.num_warps, sm.grid)

        def time_kernels(tr, tag):
            res[f"push_{tag}_us"] = _graph_us(
                lambda: tr.dispatch(buf.x, buf.x_sf, buf.topk_idx[:t], buf.topk_weights[:t]), 10)
            res[f"return_{tag}_us"] = _graph_us(lambda: tr.return_results(buf.slot_out), 10)

        if base_tr is not None:      # A/B: old and current kernels alternately, the shipped knobs
            for run in (1, 2):
                time_kernels(base_tr, f"base{run}")
                time_kernels(sm, f"new{run}")
        for rows_per_step, warps, grid in itertools.product((4, 8, 16), (4, 8), (sm.grid,)):
            sm.rows_per_step, sm.num_warps, sm.grid = rows_per_step, warps, grid
            time_kernels(sm, f"r{rows_per_step}_w{warps}_g{grid}")
        sm.rows_per_step, sm.num_warps, sm.grid = shipped
        if tma_copy.tma_copy_available(dev):
            for run in (1, 2):       # SM stores and TMA row copies alternately
                res[f"return_sm_run{run}_us"] = _graph_us(lambda: sm.return_results(buf.slot_out), 10)
                for grid, stages in itertools.product((66, 132, 160), (8,)):     # stages >= K (tma_copy)
                    sm.grid, sm.tma_stages = grid, stages
                    res[f"return_tma_g{grid}_s{stages}_run{run}_us"] = _graph_us(
                        lambda: sm.return_results(buf.slot_out, tma=True), 10)
                sm.grid, sm.tma_stages = shipped[2], 4
        y = torch.empty(t, h, dtype=torch.bfloat16, device=dev)
        res["combine_kernel_us"] = _graph_us(lambda: combine(sm.home, buf.topk_idx[:t], y), 10)
        res["unpack_us"] = _graph_us(lambda: sm.unpack(buf.x_dq), 10)
        sm.check_errors()
        rows.append(res)
    everything = [None] * world
    dist.all_gather_object(everything, rows)
    if rank == 0:
        print(f"{torch.cuda.get_device_name(dev)} x {world}; µs, max over ranks")
        for ti, t in enumerate(tokens):
            per = [everything[r][ti] for r in range(world)]
            keys = [key for key in per[0] if key.endswith("_us")]
            agg = {key: max(p[key] for p in per) for key in keys}
            print(f"T={t}: off-rank rows/rank {per[0]['offrank_rows']}")
            for key in keys:
                print(f"  {key:32s} {agg[key]:9.1f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": torch.cuda.get_device_name(dev), "ranks": world, "per_rank": everything}, f,
                          indent=1)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--workload", default="dsv3")
    ap.add_argument("--tokens", default="128,4096")
    ap.add_argument("--json", default=None)
    ap.add_argument("--copies-only", action="store_true", help="only the copy ceilings and NCCL")
    ap.add_argument("--no-ceilings", dest="ceilings", action="store_false",
                    help="skip the block-copy ceilings and NCCL (only the transport's kernels)")
    ap.add_argument("--base", default=None, help="an older symm_mem.py to time against the current one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_rank, args=(args.ranks, os.path.join(d, "init"), args), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    main()
