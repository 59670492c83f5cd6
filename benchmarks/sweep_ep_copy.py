"""Where does symm_mem dispatch/combine time go? One run on R GPUs, all numbers from the same process group:

  * `copy`: a plain block copy of the same off-rank bytes to every peer (the NVLink ceiling for Triton stores);
  * `nccl`: all_to_all_single of the same bytes;
  * `push` (= dispatch) / `return`: the copy kernels for several (rows per step, warps, programs);
  * dispatch / combine as the layer runs them.

    python benchmarks/sweep_ep_copy.py --ranks 4 --tokens 128,4096 --json out.json
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import statistics
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tmoe.workloads import WORKLOADS, make_routing  # noqa: E402


@triton.jit
def _block_copy_kernel(src_ptr, peer_ptrs, dst_off, words_per_peer, rank, R: tl.constexpr, BLOCK: tl.constexpr):
    """Rank r copies words_per_peer int32 to every peer p != r at dst_off + r * words_per_peer."""
    pid = tl.program_id(0)
    npg = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    total = (R - 1) * words_per_peer
    for i0 in range(pid * BLOCK, total, npg * BLOCK):
        j = i0 // words_per_peer
        peer = j + (j >= rank).to(tl.int32)
        w = i0 - j * words_per_peer + offs
        m = w < words_per_peer
        dst = tl.load(peer_ptrs + peer).to(tl.pointer_type(tl.int32)) + dst_off + rank * words_per_peer
        dst = tl.multiple_of(dst, 16)
        tl.store(dst + w, tl.load(src_ptr + j * words_per_peer + w, mask=m), mask=m)


@triton.jit
def _block_pull_kernel(dst_ptr, peer_ptrs, src_off, words_per_peer, rank, R: tl.constexpr, BLOCK: tl.constexpr):
    """Rank r reads words_per_peer int32 from every peer p != r (at src_off + r * words_per_peer there)."""
    pid = tl.program_id(0)
    npg = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    total = (R - 1) * words_per_peer
    for i0 in range(pid * BLOCK, total, npg * BLOCK):
        j = i0 // words_per_peer
        peer = j + (j >= rank).to(tl.int32)
        w = i0 - j * words_per_peer + offs
        m = w < words_per_peer
        src = tl.load(peer_ptrs + peer).to(tl.pointer_type(tl.int32)) + src_off + rank * words_per_peer
        src = tl.multiple_of(src, 16)
        tl.store(dst_ptr + j * words_per_peer + w, tl.load(src + w, mask=m), mask=m)


def _graph_us(fn, reps=10, inner=10) -> float:
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(inner):
            fn()
    times = []
    for _ in range(reps):
        dist.barrier()
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / inner)
    return statistics.median(times)


def _eager_us(fn, reps=10) -> float:
    fn()
    times = []
    for _ in range(reps):
        dist.barrier()
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
    return statistics.median(times)


def _rank(rank, world, init_file, args):
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=300))
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
    rows = []
    for t in tokens:
        idx, tw = make_routing(t, e, k, "uniform", seed=1000 * rank + t, device=dev)
        fill_buffer(buf, torch.randn(t, h, device=dev).to(torch.bfloat16), idx, tw)
        got = buf.transport_impl.dispatch(buf.x[:t], buf.x_sf[:t], buf.topk_idx[:t], buf.topk_weights[:t])
        offrank_rows = sum(c for r, c in enumerate(got.send_counts) if r != rank)
        row_bytes = sm.layout.row_words * 4
        res = {"tokens": t, "offrank_rows": offrank_rows}
        # ceilings: plain block copy and NCCL of the same off-rank bytes
        for what, width in (("dispatch", row_bytes), ("combine", 2 * h)):
            words_per_peer = max(offrank_rows // (world - 1), 1) * width // 4 // 4 * 4
            src = torch.zeros((world - 1) * words_per_peer, dtype=torch.int32, device=dev)
            variants = (itertools.product(("push", "pull"), (132, 264, 528), (2048, 8192), (4, 8)) if args.copies_only
                        else [("push", 528, 8192, 8)])
            for kern, grid, block, warps in variants:
                kernel = _block_copy_kernel if kern == "push" else _block_pull_kernel
                fn = lambda: kernel[(grid,)](src, sm.peer_ptrs, sm.layout.offset("recv_rows"),  # noqa: E731
                                             words_per_peer, rank, R=world, BLOCK=block, num_warps=warps)
                res[f"{kern}copy_{what}_g{grid}_b{block}_w{warps}_us"] = _graph_us(fn)
            dist.barrier()
            send = torch.empty(sum(got.send_counts), width, dtype=torch.uint8, device=dev)
            recv = torch.empty(sum(got.recv_counts), width, dtype=torch.uint8, device=dev)
            sc, rc = (got.send_counts, got.recv_counts) if what == "dispatch" else (got.recv_counts, got.send_counts)
            if what == "combine":
                send, recv = recv, send
            res[f"nccl_{what}_us"] = _eager_us(lambda: dist.all_to_all_single(recv, send, rc, sc))
        if args.copies_only:
            rows.append(res)
            continue
        base = (sm.rows_per_step, sm.num_warps, sm.grid)
        for rows_per_step, warps, grid in itertools.product((4, 8, 16), (4, 8), (132,)):
            sm.rows_per_step, sm.num_warps, sm.grid = rows_per_step, warps, grid
            res[f"push_r{rows_per_step}_w{warps}_g{grid}_us"] = _graph_us(
                lambda: sm.dispatch(buf.x, buf.x_sf, buf.topk_idx[:t], buf.topk_weights[:t]))
            res[f"return_r{rows_per_step}_w{warps}_g{grid}_us"] = _graph_us(lambda: sm.return_results(buf.slot_out))
        sm.rows_per_step, sm.num_warps, sm.grid = base
        y = torch.empty(t, h, dtype=torch.bfloat16, device=dev)
        res["combine_kernel_us"] = _graph_us(lambda: combine(sm.home, buf.topk_idx[:t], y))
        res["unpack_us"] = _graph_us(lambda: sm.unpack(buf.x_dq))
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_rank, args=(args.ranks, os.path.join(d, "init"), args), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    main()
