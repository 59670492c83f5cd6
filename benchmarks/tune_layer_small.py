"""Pick the small-T GEMM configs by timing the whole layer call instead of each GEMM alone.

    python benchmarks/tune_layer_small.py --workloads qwen3,gptoss,v4flash,dsv3 --tokens 1 --json out.json
    python benchmarks/set_cache_pick.py --device "$(nvidia-smi --query-gpu=name --format=csv,noheader)" \\
        --from-sweep out.json --min-gain 0.01

Why: at T <= 8 a call is a chain of programmatic dependent launches (kernels/pdl.py), and what a GEMM gains from it
depends on its K loop — the code-ring loops find their tile and issue their first weight loads before they wait for
the previous kernel, the register loops wait first — so a GEMM timed alone ranks configs differently from the call
(H200, session 13: v4flash GEMM2 T = 1 ring vs the registers pick 17.9 -> 16.8 µs alone, the call 53.2 -> 49.5).
Coordinate descent per (workload, T): GEMM1 over its candidates with GEMM2 at the cache's pick, then GEMM2 with
the best GEMM1; every candidate's output must equal the first's bitwise. Rounds interleave the candidates; a
candidate's time is the median of its rounds. Output: sweep_gemm.py's JSON rows (first row per (T, GEMM) = the
cache's pick; `us` = the whole call's µs, `scope` = "layer"), which set_cache_pick.py --from-sweep reads.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_layer import layer_call, layer_weights  # noqa: E402
from tmoe.autotune.timing import time_graph  # noqa: E402
from tmoe.kernels import pdl  # noqa: E402
from tmoe.kernels.configs import GemmConfig, gluon_block_n, half_tile_block_n, select_config  # noqa: E402
from tmoe.workloads import WORKLOADS  # noqa: E402

import tmoe  # noqa: E402


def k_loop_candidates(pick: GemmConfig) -> list[GemmConfig]:
    """The pick, then the same 4-warp tile with each K loop: plain, codes two steps ahead in registers, the code ring
    3 / 4 deep, and the 3-deep ring with overlap (at least 3 stages)."""
    if pick.kernel != "gluon" or pick.num_warps != 4:
        return [pick]
    plain = replace(pick, prefetch=1, overlap=False, maxnreg=None, three_quarter=False)
    out = [pick, plain, replace(plain, prefetch=2), replace(plain, prefetch=3), replace(plain, prefetch=4),
           replace(plain, prefetch=3, overlap=True, num_stages=max(pick.num_stages, 3))]
    return list(dict.fromkeys(out))


def tile_candidates(pick: GemmConfig, gemm: str) -> list[GemmConfig]:
    """The pick, then the same K loop with 1 / 2 / 4 channel blocks per program (fewer, longer programs: a grid of
    1.8 waves becomes 0.9, NOTES "v20"), a 4-warp pick with its other full-tile block_n (half tiles: --space half),
    and the other grid order."""
    if pick.kernel != "gluon":
        return [pick]
    out = [pick] + [replace(pick, n_blocks=nb) for nb in (1, 2, 4)]
    if pick.num_warps == 4:
        out += [replace(pick, block_n=bn, maxnreg=None) for bn in gluon_block_n(gemm, 4) if bn != pick.block_n]
    out.append(replace(pick, n_fastest=not pick.grid_n_fastest, group_m=None))
    return list(dict.fromkeys(out))


def combo_candidates(pick: GemmConfig) -> list[GemmConfig]:
    """The pick, then the same 4-warp tile with the plain loop / the code ring 3 / 4 deep, each in both grid orders:
    the two choices compound (dsv3 T = 128 GEMM1, whole call: ring 4 -1.3%, N-block-major -1.6%, both -3.8%; NOTES
    "v21"), which a coordinate descent over one space at a time misses."""
    if pick.kernel != "gluon" or pick.num_warps != 4:
        return [pick]
    plain = replace(pick, prefetch=1, overlap=False, maxnreg=None, group_m=None, three_quarter=False)
    default = replace(plain, n_fastest=None).grid_n_fastest     # the default order spelled None: no repeats
    out = [pick] + [replace(plain, prefetch=pf, n_fastest=None if nf == default else nf)
                    for pf in (1, 3, 4) for nf in (False, True)]
    return list(dict.fromkeys(out))


def depth_candidates(pick: GemmConfig) -> list[GemmConfig]:
    """The pick, then its 4-warp tile with the code ring 3 / 4 / 5 / 6 steps deep and one activation stage more than
    that (STAGES = DEPTH + 1): a ring step commits its codes and its activation tile as one cp.async group, and the
    wait for activation tile i (AHEAD = STAGES - 1 steps after its issue) completes every older group, so a ring
    deeper than STAGES - 1 only hides STAGES - 1 steps of load latency (NOTES "v22")."""
    if pick.kernel != "gluon" or pick.num_warps != 4:
        return [pick]
    out = [pick] + [pick.with_code_ring(depth) for depth in (3, 4, 5, 6)]
    return list(dict.fromkeys(out))


def mid4_candidates(pick: GemmConfig, gemm: str) -> list[GemmConfig]:
    """The pick, then (an 8-warp pick only) 4-warp tiles of its block_m and half of it, N-block-major with a body of
    half the tile, the codes through a ring 3 / 4 deep with one activation stage more: at mid T (qwen3 T = 512:
    8-warp register loops, 2 CTAs per SM, 1.9 TB/s under ncu, NOTES "v20") more, smaller CTAs whose rings hide the
    loads. Measured slower than the 8-warp picks at qwen3 T = 512 and gpt-oss / v4flash T = 2048 (NOTES "v22")."""
    if pick.kernel != "gluon" or pick.num_warps != 8 or pick.block_m > 64:
        return [pick]
    block_n = 32 if gemm == "gemm1" else 64
    out = [pick] + [GemmConfig(bm, block_n, True, 4, kernel="gluon", n_fastest=True, sub_block_m=bm // 2)
                    .with_code_ring(depth) for bm in (pick.block_m // 2, pick.block_m) for depth in (3, 4)]
    return list(dict.fromkeys(out))


def half_candidates(pick: GemmConfig, gemm: str) -> list[GemmConfig]:
    """The pick, then (a 4-warp pick) half tiles — 8 weight rows per warp, the wgmma's other 8 rows zeros
    (configs.half_tile_block_n): GEMM2's 4-warp block_n 32 and both GEMMs' 8-warp one — each with the pick's K loop
    and with code rings 3 / 4 / 6 deep (one activation stage more). A half tile decodes one row per thread instead of
    two, and twice as many programs (or warps) share the weights: meant for T = 1, where a program's K steps run
    with 1-3 programs per SM (NOTES "v17"); measured slower nearly everywhere (NOTES "v24")."""
    if pick.kernel != "gluon" or pick.num_warps != 4:
        return [pick]
    halves = [replace(pick, block_n=half_tile_block_n(gemm, warps), num_warps=warps, maxnreg=None)
              for warps in (4, 8) if half_tile_block_n(gemm, warps)]
    out = [pick]
    for half in halves:
        out += [half] + [half.with_code_ring(depth) for depth in (3, 4, 6)]
    return list(dict.fromkeys(out))


def cap_candidates(pick: GemmConfig) -> list[GemmConfig]:
    """The pick, then (a 4-warp pick) capped at 80 / 72 / 64 registers: 6 / 7 / 8 CTAs of 4 warps per SM where shared
    memory allows. K % 128 != 0 costs the ring loop ~12 registers (its partial last step: gpt-oss GEMM1 79 instead of
    67, offline), one CTA per SM; ptxas keeps the loop and spills a few bytes outside it at 72 (NOTES "v25")."""
    if pick.kernel != "gluon" or pick.num_warps != 4:
        return [pick]
    return list(dict.fromkeys([pick] + [replace(pick, maxnreg=cap) for cap in (80, 72, 64)]))


def early_pairs(pick1: GemmConfig, pick2: GemmConfig) -> list[tuple[GemmConfig, GemmConfig]]:
    """--space early: (GEMM1, GEMM2) pairs, timed together — the cache's picks first, then early GEMM2 off / on
    (`GemmConfig.early`) with the picks' grid orders and with both grids N-block-major (GEMM1 then finishes experts in
    order and GEMM2 takes them in that order: NOTES "v28"). Only for two Gluon picks (early needs both)."""
    if pick1.kernel != "gluon" or pick2.kernel != "gluon":
        return [(pick1, pick2)]
    orders = ((pick1, pick2), (replace(pick1, n_fastest=True), replace(pick2, n_fastest=True)))
    pairs = [(g1, replace(g2, early=e)) for g1, g2 in orders for e in (False, True)]
    return list(dict.fromkeys([(pick1, pick2)] + pairs))


def measure_pairs(layer, y, pairs, rounds: int, compile_only: bool, ref=None):
    """Run each (GEMM1, GEMM2) config pair once (compiles it) and check its output bitwise against `ref` (default: the
    first pair's); unless compile_only, time the pairs as whole calls, rounds interleaved. Returns
    (times {pair: [µs per round]}, same {pair: bool}, ref)."""
    calls, times, same = {}, {p: [] for p in pairs}, {}
    for pair in pairs:
        calls[pair] = functools.partial(layer, gemm1_config=pair[0], gemm2_config=pair[1])
        calls[pair]()
        torch.cuda.synchronize()
        ref = y.clone() if ref is None else ref
        same[pair] = bool(torch.equal(y.view(torch.int16), ref.view(torch.int16)))
    for _ in range(0 if compile_only else rounds):
        for pair in pairs:
            times[pair].append(time_graph(calls[pair]))
    return times, same, ref


def time_pairs(name: str, t: int, layer, y, pairs, rounds: int, compile_only: bool) -> list[dict]:
    """Time each (GEMM1, GEMM2) pair as whole calls (measure_pairs); one row per GEMM and pair, both with the pair's
    µs, so set_cache_pick.py --from-sweep takes the fastest pair's configs for both GEMMs."""
    times, same, _ = measure_pairs(layer, y, pairs, rounds, compile_only)
    if compile_only:
        print(f"{name} T={t}: {len(pairs)} pairs compiled, bitwise equal to the first: {all(same.values())}",
              flush=True)
        assert all(same.values()), [p for p in pairs if not same[p]]
        return []
    rows = []
    for n, pair in enumerate(pairs):
        us = statistics.median(times[pair])
        for gemm, c in zip(("gemm1", "gemm2"), pair):
            rows.append({"workload": name, "tokens": t, **c.as_dict(), "gemm": gemm, "us": us, "scope": "layer",
                         "same_as_first": same[pair], "rounds": times[pair]})
        print(f"{name} T={t} {'pick' if n == 0 else '    '} "
              f"nf={int(pair[0].grid_n_fastest)}/{int(pair[1].grid_n_fastest)} early={int(pair[1].early)}: "
              f"layer {us:7.1f} us ({' '.join(f'{v:.1f}' for v in times[pair])}) same={same[pair]}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="qwen3,gptoss,v4flash,dsv3")
    ap.add_argument("--tokens", default="1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--space", choices=("kloop", "tiles", "combo", "depth", "mid4", "half", "cap", "early"),
                    default="kloop",
                    help="kloop: the pick's tile with each K loop; tiles: its K loop with other channel blocks per "
                         "program / block_n / grid order; combo: K loop x grid order; depth: code rings 3-6 deep, "
                         "one activation stage more than the depth; mid4: 4-warp ring tiles next to an 8-warp pick; "
                         "half: half tiles (8 weight rows per warp) with the pick's K loop and rings 3 / 4 / 6; "
                         "cap: a 4-warp pick capped at 80 / 72 / 64 registers (6 / 7 / 8 CTAs per SM); "
                         "early: the two picks timed together with early GEMM2 off / on, in the picks' grid orders "
                         "and both N-block-major")
    ap.add_argument("--compile-only", action="store_true",
                    help="run each candidate once (compile it, check its bits) and time nothing: warms the Triton "
                         "cache, e.g. one process per workload in parallel before the timed run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.space == "early" and pdl.early_gemm2_setting() is not None:
        raise SystemExit("--space early times the GEMM2 picks' `early`, which TMOE_EARLY_GEMM2=0|1 overrides: "
                         "unset it (or set auto)")
    device = torch.cuda.get_device_name()
    rows = []
    for name in args.workloads.split(","):
        wl = WORKLOADS[name]
        e, k, h, i = wl.num_experts, wl.topk, wl.hidden, wl.intermediate
        _, (l1, l2) = layer_weights(wl)
        tokens = [int(t) for t in args.tokens.split(",")]
        buf = tmoe.get_symm_buffer_for_mega_moe(None, e, max(tokens), k, h, i)
        for t in tokens:
            layer, _, _, _, y = layer_call(wl, l1, l2, buf, t, "uniform")
            picks = {g: select_config(g, t * k, e, False, num_experts=e, hidden=h, intermediate=i, topk=k,
                                      device_name=device, hopper=True) for g in ("gemm1", "gemm2")}
            if args.space == "early":
                rows += time_pairs(wl.name, t, layer, y, early_pairs(picks["gemm1"], picks["gemm2"]), args.rounds,
                                   args.compile_only)
                continue
            chosen = dict(picks)
            ref = None
            for gemm in ("gemm1", "gemm2"):
                cands = {"kloop": k_loop_candidates, "combo": combo_candidates, "depth": depth_candidates,
                         "cap": cap_candidates,
                         "mid4": functools.partial(mid4_candidates, gemm=gemm),
                         "half": functools.partial(half_candidates, gemm=gemm)}.get(
                    args.space, functools.partial(tile_candidates, gemm=gemm))(picks[gemm])
                pairs = {c: (c, chosen["gemm2"]) if gemm == "gemm1" else (chosen["gemm1"], c) for c in cands}
                by_pair, same_pair, ref = measure_pairs(layer, y, list(pairs.values()), args.rounds,
                                                        args.compile_only, ref)
                times = {c: by_pair[pairs[c]] for c in cands}
                same = {c: same_pair[pairs[c]] for c in cands}
                if args.compile_only:
                    print(f"{name} T={t} {gemm}: {len(cands)} candidates compiled, bitwise equal to the first: "
                          f"{all(same.values())}", flush=True)
                    assert all(same.values()), [c for c in cands if not same[c]]
                    continue
                for n, c in enumerate(cands):
                    us = statistics.median(times[c])
                    rows.append({"workload": wl.name, "tokens": t, **c.as_dict(), "gemm": gemm, "us": us,
                                 "scope": "layer", "same_as_first": same[c], "rounds": times[c]})
                    print(f"{name} T={t} {gemm} {'pick' if n == 0 else '    '} bm={c.block_m} bn={c.block_n} "
                          f"w={c.num_warps} sub={c.sub_block_m} nb={c.n_blocks} "
                          f"pf={c.prefetch} ovl={int(c.overlap)} s={c.num_stages} maxnreg={c.maxnreg} "
                          f"nf={int(c.grid_n_fastest)}: layer {us:7.1f} us "
                          f"({' '.join(f'{v:.1f}' for v in times[c])}) same={same[c]}", flush=True)
                chosen[gemm] = min((c for c in cands if same[c]), key=lambda c: statistics.median(times[c]))
        buf.destroy()
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
