"""Expert-parallel benchmark: the whole layer, dispatch and combine separately, and NCCL
all_to_all_single moving the same bytes — all in one run on R ranks.

    python benchmarks/bench_ep.py --ranks 4 [--workload dsv3] [--tokens 1,128,4096] [--transport symm_mem|collective]
    python benchmarks/bench_ep.py --ranks 2 --device cpu --workload tiny --tokens 4   # smoke test (gloo)

Spawns one process per rank (one GPU each, NCCL; or CPU + gloo under the Triton interpreter for a
smoke test, whose times mean nothing). Each rank holds E/R experts and T tokens with uniform distinct
top-k routing. Times are medians over --reps, ranks synchronized before each: the layer eagerly and
(symm_mem) replayed from a CUDA graph; symm_mem dispatch and combine (results back + ordered
combine) as 10 back-to-back calls per graph replay; the collective transport's eagerly (it syncs
the host). NCCL `all_to_all_single` moves the same bytes (dispatch rows, then bf16 results) eagerly.
Rank 0 prints the table and writes the rows (`"ep": R`, `dispatch_us`, `combine_us`,
`nccl_a2a_us` = dispatch + combine bytes, `offrank_gbps`, `bitwise`) to --json.
Every rank also checks its output (after the eager timing and after the graph replays) bitwise against
the layer on one rank holding all E experts, same tokens (`--no-check` skips it: it needs the global
weights on every GPU, ~17 GB at dsv3); a mismatch is reported in the table and exits non-zero.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tmoe.autotune.timing import time_eager  # noqa: E402
from tmoe.workloads import WORKLOADS, Workload, make_routing, random_mxfp4_weights  # noqa: E402

TINY = Workload("tiny", 8, 2, 64, 32)
RETURN_MODES = {"auto": "auto", "fused": "1", "separate": "0"}      # --return-mode -> TMOE_EP_FUSED_RETURN


def _timed(fn, device, reps: int) -> float:
    """Median µs of fn() with all ranks starting together."""
    if device.type == "cuda":
        return time_eager(fn, reps=reps, warmup=0, before=dist.barrier)
    times = []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def token_rows_per_rank(topk_idx: torch.Tensor, num_local_experts: int, world: int) -> tuple[list[int], list[int]]:
    """Rows the symm_mem dispatch sends to / receives from each rank: one per (token, destination
    rank owning at least one of its experts). Collective (all_to_all_single of the counts)."""
    t = topk_idx.shape[0]
    dest = torch.where(topk_idx >= 0, topk_idx // num_local_experts, world)
    hit = torch.zeros(t, world + 1, device=topk_idx.device).scatter_(1, dest, 1.0)[:, :world]
    mine = hit.sum(0).to(torch.int64)
    theirs = torch.empty_like(mine)
    dist.all_to_all_single(theirs, mine)
    return mine.tolist(), theirs.tolist()


def _graph_us(fn, reps: int, inner: int = 10) -> float:
    """Median µs per call of `inner` back-to-back calls captured in one CUDA graph (no Python launch
    overhead), all ranks released together by a barrier before each replay."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            fn()
    times = []
    for _ in range(reps):
        dist.barrier()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / inner)
    return statistics.median(times)


def rank_weights(wl: Workload, world: int, rank: int, dev: torch.device) -> tuple[tuple, tuple]:
    """Rank `rank`'s experts (E / world of them) as canonical MXFP4 ((w1, w1_sf), (w2, w2_sf)), from its own seeds."""
    e, h, i = wl.num_experts, wl.hidden, wl.intermediate
    return (random_mxfp4_weights(e // world, 2 * i, h, device=dev, seed=1 + rank),
            random_mxfp4_weights(e // world, h, i, device=dev, seed=11 + rank))


class _OneRank:
    """The layer on one rank holding every expert (each rank's weights re-made from its seed), the oracle of the
    expert-parallel bits (EP invariance, DESIGN.md §1.1)."""

    def __init__(self, wl: Workload, world: int, capacity: int, dev: torch.device):
        import tmoe
        e, h, i = wl.num_experts, wl.hidden, wl.intermediate
        ranks = [rank_weights(wl, world, r, dev) for r in range(world)]     # [(w1 pair, w2 pair)] per rank
        w1, w2 = ((torch.cat([r[j][0] for r in ranks]), torch.cat([r[j][1] for r in ranks])) for j in (0, 1))
        self.l1, self.l2 = tmoe.transform_weights_for_mega_moe(w1, w2, backend="triton")
        self.buf = tmoe.get_symm_buffer_for_mega_moe(None, e, capacity, wl.topk, h, i, device=dev, backend="triton")
        self.wl = wl

    def output(self, x: torch.Tensor, idx: torch.Tensor, tw: torch.Tensor) -> torch.Tensor:
        import tmoe
        from tmoe.layer import fill_buffer
        fill_buffer(self.buf, x, idx, tw)
        y_one = torch.empty(x.shape, dtype=torch.bfloat16, device=x.device)
        tmoe.fp8_fp4_mega_moe(y_one, self.l1, self.l2, self.buf, activation_clamp=self.wl.clamp)
        return y_one

    def same(self, y: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, tw: torch.Tensor) -> bool:
        return same_bits(y, self.output(x, idx, tw))


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(torch.int16), b.view(torch.int16))


def _rank_main(rank: int, world: int, init_file: str, args) -> None:
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=300))
    import tmoe
    from tmoe.kernels.combine import combine
    from tmoe.layer import fill_buffer
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    wl = TINY if args.workload == "tiny" else WORKLOADS[args.workload]
    e, k, h, i = wl.num_experts, wl.topk, wl.hidden, wl.intermediate
    tokens = [int(t) for t in args.tokens.split(",")]
    l1, l2 = tmoe.transform_weights_for_mega_moe(*rank_weights(wl, world, rank, dev), backend="triton")
    buf = tmoe.get_symm_buffer_for_mega_moe(dist.group.WORLD, e, max(tokens), k, h, i, device=dev,
                                            backend="triton", transport=args.transport)
    tr = buf.transport_impl        # the collective transport (also the symm_mem buffers' agreement path)
    one = _OneRank(wl, world, max(tokens), dev) if args.check else None
    rows = []
    for t in tokens:
        idx, tw = make_routing(t, e, k, "uniform", seed=1000 * rank + t, device=dev)
        x = torch.randn(t, h, device=dev).to(torch.bfloat16)
        fill_buffer(buf, x, idx, tw)
        y = torch.empty(t, h, dtype=torch.bfloat16, device=dev)
        layer = lambda: tmoe.fp8_fp4_mega_moe(y, l1, l2, buf, activation_clamp=wl.clamp)  # noqa: E731
        layer()   # compile + warm up
        us = _timed(layer, dev, args.reps)
        row = {"workload": wl.name, "tokens": t, "ep": world, "rank": rank, "transport": buf.transport, "us": us}
        y_one = one.output(x, idx, tw) if one is not None else None    # once per T: both checks compare with it
        if one is not None:
            row["bitwise"] = same_bits(y, y_one)
        got = tr.dispatch(buf.x[:t], buf.x_sf[:t], buf.topk_idx[:t], buf.topk_weights[:t])   # counts for NCCL
        if buf.transport == "symm_mem":
            sm = buf.symm
            row_bytes = sm.layout.row_words * 4
            row["graph_us"] = _graph_us(layer, args.reps)
            if one is not None:     # the last replay's output
                row["bitwise"] = row["bitwise"] and same_bits(y, y_one)
            row["dispatch_us"] = _graph_us(lambda: sm.dispatch(buf.x, buf.x_sf, buf.topk_idx[:t],
                                                               buf.topk_weights[:t]), args.reps)

            fused, tma = sm.fused_for(t * k), sm.tma_for(t * k)
            row["fused_return"], row["tma_return"] = fused, tma

            def ret():   # fused return: the results already went out in GEMM2; only barrier + combine remain
                if fused:
                    sm.results_sent()
                else:
                    sm.return_results(buf.slot_out, tma=tma)
                combine(sm.finish_return(), buf.topk_idx[:t], y)
            row["combine_us"] = _graph_us(ret, args.reps)
            sm.check_errors()
        else:
            row_bytes = h + buf.x_sf.shape[1] * 4
            row["dispatch_us"] = _timed(lambda: tr.dispatch(buf.x[:t], buf.x_sf[:t], buf.topk_idx[:t],
                                                            buf.topk_weights[:t]), dev, args.reps)
            n = got.x.shape[0]
            row["combine_us"] = _timed(lambda: tr.return_results(got, buf.slot_out[:n], buf.slot_home), dev,
                                       args.reps)
        # The same bytes through bare all_to_all_single calls: the dispatch rows, then the bf16 results back.
        disp_send, disp_recv = got.send_counts, got.recv_counts        # collective: one row per slot
        if buf.transport == "symm_mem":                                 # one row per (token, destination rank)
            disp_send, disp_recv = token_rows_per_rank(idx, e // world, world)
        nccl = {}
        for what, width, sc, rc in (("dispatch", row_bytes, disp_send, disp_recv),
                                    ("combine", 2 * h, got.recv_counts, got.send_counts)):
            send = torch.empty(sum(sc), width, dtype=torch.uint8, device=tr.comm_device)
            recv = torch.empty(sum(rc), width, dtype=torch.uint8, device=tr.comm_device)
            a2a = lambda: dist.all_to_all_single(recv, send, output_split_sizes=rc,  # noqa: E731
                                                 input_split_sizes=sc)
            a2a()
            nccl[what] = _timed(a2a, dev, args.reps)
        offrank = sum(c for r, c in enumerate(disp_send) if r != rank) * row_bytes
        offrank_back = sum(c for r, c in enumerate(got.recv_counts) if r != rank) * 2 * h
        row.update(nccl_dispatch_us=nccl["dispatch"], nccl_combine_us=nccl["combine"],
                   nccl_a2a_us=nccl["dispatch"] + nccl["combine"], offrank_bytes=offrank,
                   offrank_combine_bytes=offrank_back,
                   offrank_gbps=offrank / row["dispatch_us"] / 1e3 if row["dispatch_us"] else 0.0,
                   offrank_combine_gbps=offrank_back / row["combine_us"] / 1e3 if row["combine_us"] else 0.0)
        rows.append(row)
    everything = [None] * world
    dist.all_gather_object(everything, rows)
    flat = [r for per_rank in everything for r in per_rank]
    if rank == 0:
        _report(flat, args, torch.cuda.get_device_name(dev) if cuda else "cpu (interpreter)", world)
    dist.destroy_process_group()
    bad = sorted({(r["tokens"], r["rank"]) for r in flat if r.get("bitwise") is False})
    if bad:
        raise SystemExit(f"EP output differs from one rank holding every expert at (tokens, rank) {bad}")


def _report(rows, args, device_name: str, world: int) -> None:
    print(f"{device_name} x {world}, transport {rows[0]['transport']} (medians of {args.reps}; max over ranks)")
    print("| workload | T/rank | return | layer µs (eager) | layer µs (graph) | dispatch µs | combine µs | dispatch+combine µs "
          "| NCCL a2a µs, same bytes (dispatch + combine) | vs NCCL | off-rank GB/s per rank (dispatch / combine) "
          "| = 1 rank |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    summary = []
    for t in sorted({r["tokens"] for r in rows}):
        rs = [r for r in rows if r["tokens"] == t]
        keys = ("us", "graph_us", "dispatch_us", "combine_us", "nccl_dispatch_us", "nccl_combine_us", "nccl_a2a_us")
        agg = {key: max(r.get(key, float("nan")) for r in rs) for key in keys}
        agg["offrank_gbps"] = min(r["offrank_gbps"] for r in rs)
        agg["offrank_combine_gbps"] = min(r["offrank_combine_gbps"] for r in rs)
        both = agg["dispatch_us"] + agg["combine_us"]
        agg["speedup_vs_nccl"] = agg["nccl_a2a_us"] / both if both else 0.0
        checks = [r.get("bitwise") for r in rs]
        agg["bitwise"] = None if None in checks else all(checks)
        same = {None: "not checked", True: "bitwise", False: "**DIFFERS**"}[agg["bitwise"]]
        modes = {(r.get("fused_return"), r.get("tma_return")) for r in rs}
        mode = "—" if modes == {(None, None)} else "/".join(sorted(
            ("fused" if f else "separate") + (" TMA" if tma else "") for f, tma in modes if f is not None))
        print(f"| {rs[0]['workload']} | {t} | {mode} | {agg['us']:.1f} | {agg['graph_us']:.1f} | {agg['dispatch_us']:.1f} | "
              f"{agg['combine_us']:.1f} | {both:.1f} | {agg['nccl_a2a_us']:.1f} ({agg['nccl_dispatch_us']:.1f} + "
              f"{agg['nccl_combine_us']:.1f}) | {agg['speedup_vs_nccl']:.2f}x | {agg['offrank_gbps']:.1f} / "
              f"{agg['offrank_combine_gbps']:.1f} | {same} |")
        summary.append({"workload": rs[0]["workload"], "tokens": t, "ep": world, "transport": rs[0]["transport"],
                        "return_mode": args.return_mode, "fused_return": [r.get("fused_return") for r in rs],
                        "tma_return": [r.get("tma_return") for r in rs], **agg})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name, "torch": torch.__version__, "ranks": world, "rows": summary,
                       "per_rank": rows}, f, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--workload", default="dsv3", choices=sorted(WORKLOADS) + ["tiny"])
    ap.add_argument("--tokens", default="1,128,4096")
    ap.add_argument("--transport", default="auto")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--return-mode", default="auto", choices=sorted(RETURN_MODES),
                    help="symm_mem: fused = GEMM2 writes results straight into the sources (combine_us is then "
                         "barrier + ordered combine only; the transfer is inside the layer time), separate = a "
                         "return pass after GEMM2, auto = fused up to FUSED_RETURN_MAX_SLOTS slots per rank")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-check", dest="check", action="store_false",
                    help="skip the bitwise check against one rank holding every expert (saves the global weights' "
                         "memory)")
    args = ap.parse_args()
    os.environ["TMOE_EP_FUSED_RETURN"] = RETURN_MODES[args.return_mode]     # inherited by the spawned ranks
    if args.device == "cuda" and torch.cuda.device_count() < args.ranks:
        sys.exit(f"--ranks {args.ranks} needs {args.ranks} GPUs, found {torch.cuda.device_count()}")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_rank_main, args=(args.ranks, os.path.join(d, "init"), args), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    main()
