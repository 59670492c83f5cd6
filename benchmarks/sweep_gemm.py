"""Time GEMM1 (+SwiGLU+requant) and GEMM2 alone over a grid of tile configs; check they agree bitwise.

    python benchmarks/sweep_gemm.py --workload dsv3 --tokens 1,128,8192 [--json out.json]

Used to pick the built-in heuristics (tmoe/kernels/configs.py) and seed the autotune cache.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ceilings import time_graph  # noqa: E402
from tmoe.workloads import WORKLOADS, make_routing, random_mxfp4_weights  # noqa: E402

import tmoe  # noqa: E402
from tmoe.kernels import grouped_gemm  # noqa: E402
from tmoe.kernels.configs import CODE_RING_DEPTHS, GemmConfig, gluon_block_n, select_config  # noqa: E402
from tmoe.kernels.quant import mxfp8_to_bf16  # noqa: E402
from tmoe.kernels.routing import build_routing  # noqa: E402
from tmoe.kernels.weight_layout import is_quad, is_tiled  # noqa: E402


def overlap_candidates(base: GemmConfig) -> list[GemmConfig]:
    """`base` (the shipped pick), then with `overlap` (decode while the previous wgmma runs): 3 and 4 stages,
    with the compiler's registers and capped (4 warps: 128 / 168 = 4 / 3 CTAs per SM; 8 warps: 128 = 2).
    A 256-token base is compared with 128-token overlap tiles (at 256 tokens the second operand spills)."""
    if base.kernel != "gluon":
        return [base]
    bm = min(base.block_m, 128)
    out = [base]
    for stages in (3, 4):
        if stages * bm * 256 > 196608:
            continue
        for maxnreg in ((None, 128) if base.num_warps == 8 else (None, 128, 168)):
            out.append(base.with_k_loop(block_m=bm, num_stages=stages, overlap=True, maxnreg=maxnreg,
                                        tail_block_m=base.tail_block_m if (base.tail_block_m or 0) < bm else None))
    return out


def n_blocks_candidates(base: GemmConfig, kernel: str, block_n: bool = False) -> list[GemmConfig]:
    """`base` (the shipped pick), then with 2 and 4 channel blocks per program (`n_blocks`); `block_n`: also
    the other 4-warp block_n of a 4-warp pick, with and without a 136-register cap (8-token GEMM2 tiles of 128
    rows need it for 4 CTAs per SM, NOTES "v10")."""
    if base.kernel != "gluon":
        return [base]
    out = [base] + [replace(base, n_blocks=nb) for nb in (2, 4)]
    if block_n and base.num_warps == 4:
        for bn in gluon_block_n(kernel, 4):
            for cap in ((None, 136) if bn != base.block_n else ()):
                out += [replace(base, block_n=bn, maxnreg=cap, n_blocks=nb) for nb in (1, 2)]
    return out


def prefetch_candidates(base: GemmConfig) -> list[GemmConfig]:
    """`base` (the shipped pick), then its other prefetch depths: codes one or two K steps ahead in registers, and
    for 4-warp tiles prefetch=2 under an 80-register cap (6 CTAs per SM instead of 4, a few bytes of spills) and the
    shared-memory code rings (`CODE_RING_DEPTHS` steps ahead)."""
    if base.kernel != "gluon" or base.overlap:
        return [base]
    out = [base] + [base.with_k_loop(prefetch=d) for d in (1, 2) if d != base.prefetch]
    if base.num_warps == 4:
        out += [base.with_k_loop(prefetch=2, maxnreg=80)] + [base.with_k_loop(prefetch=d, maxnreg=None)
                                                             for d in CODE_RING_DEPTHS]
    return list(dict.fromkeys(out))     # in order, without repeats (the base may be one of them)


def ring_overlap_candidates(base: GemmConfig) -> list[GemmConfig]:
    """`base` (the shipped pick), then for a 4-warp pick the code ring with overlap (decode while the previous wgmma
    runs, NOTES "v18"): the pick's ring depth (3 if it has none), at least 3 stages, with the compiler's registers
    (~145 at 64 weight rows: 3 CTAs per SM) and capped at 128 (4 CTAs, 64 bytes of spills). NOTES: tighter caps make
    ptxas wait for every wgmma (test_compile_sm90 checks that this cap does not)."""
    if base.kernel != "gluon" or base.num_warps != 4:
        return [base]
    depth = base.prefetch if base.prefetch >= 3 else 3
    return [base] + [base.with_k_loop(prefetch=depth, overlap=True, num_stages=max(base.num_stages, 3), maxnreg=cap)
                     for cap in (None, 128)]


def narrow_sub_candidates(base: GemmConfig) -> list[GemmConfig]:
    """`base` (the shipped pick), then a tail-split pick without its tail launch and with a 32- / 64-token body in
    its own tile instead: an expert's last few rows (dsv3 T = 8192: 256 +- 16 rows per expert in 256-token tiles) run
    in the same launch, next to the tile that read the same weights just before, with wgmmas as narrow as the
    remainder (v19 tried only a 128-token body there; NOTES "v30")."""
    out = [base]
    if base.kernel != "gluon" or not base.tail_block_m:
        return out
    for width in (32, 64):
        try:
            out.append(replace(base, tail_block_m=None, sub_block_m=width))
        except ValueError:      # not a valid body width for this tile (GemmConfig checks)
            continue
    return out


def three_quarter_candidates(base: GemmConfig, caps: tuple[int, ...] = ()) -> list[GemmConfig]:
    """`base` (the shipped pick), then the same tile with the three-quarter body (`three_quarter`: a tile with at most
    3/4 block_m rows runs block_m / 2 + block_m / 4 token columns, NOTES "v31"); a tail-split pick instead drops its
    tail launch for a body as wide as its tail, and for a 32-token one. `caps`: each variant also under these
    register caps (maxnreg). NOTES: uncapped, ptxas gives small tiles' three-quarter body 29-66 registers more than
    the pick (fewer CTAs per SM), though it fits the pick's count without spills at 32 tokens (NOTES "v32")."""
    out = [base]
    if base.kernel != "gluon":
        return out
    variants = ([{}] if base.tail_block_m is None else
                [dict(tail_block_m=None, sub_block_m=base.tail_block_m), dict(tail_block_m=None, sub_block_m=32)])
    for kw in variants:
        for cap in (base.maxnreg, *caps):
            try:
                out.append(replace(base, three_quarter=True, maxnreg=cap, **kw))
            except ValueError:  # not a plain K loop, or a quarter narrower than the activation load (GemmConfig)
                continue
    return list(dict.fromkeys(out))


def tma_b_candidates(base: GemmConfig) -> list[GemmConfig]:
    """`base` (the shipped pick), then the same tile with 3 stages (if it has another count) and with the TMA-fed
    activation ring (`tma_b`, 3 stages: warpgroups not in lockstep, NOTES "v33"; GEMM1's timing includes the sorted
    copy of its token rows the ring reads); a tail-split pick ends its experts in the same launch instead (a body as
    wide as its tail), as the ring needs one launch."""
    if base.kernel != "gluon" or base.k_loop != 0:
        return [base]
    tile = base if base.tail_block_m is None else replace(base, tail_block_m=None, sub_block_m=base.tail_block_m)
    return list(dict.fromkeys([base, replace(tile, num_stages=3), replace(tile, num_stages=3, tma_b=True)]))


def sub_candidates(base: GemmConfig, kernel: str = "gemm2") -> list[GemmConfig]:
    """`base` (the shipped pick), then token tiles with a narrower second body (`sub_block_m`): the same tile
    with a half-width body, and twice the tile with the pick's width as the body (one program decodes each
    weight block once for up to 2x the tokens, NOTES "v19"); a tail-split pick drops its tail for the body. Tiles
    under 128 tokens also with the N-block-major grid (`n_fastest`: a tile's activation rows from L2 for every
    channel block), an 8-warp pick also as 4-warp 128-token tiles with a 64-token body, and a tail-split pick also
    with its tail launch N-block-major."""
    if base.kernel != "gluon":
        return [base]
    bm = base.block_m
    out = [base]
    variants = [dict(sub_block_m=bm // 2), dict(block_m=2 * bm, sub_block_m=bm),
                dict(block_m=2 * bm, sub_block_m=bm, num_stages=2)]
    if base.num_warps == 8:     # one 8-warp CTA per SM: the decode overlapped with the previous wgmma or not
        variants += [dict(block_m=b, sub_block_m=b // 2, overlap=not base.overlap) for b in (bm, 2 * bm)]
        variants += [dict(num_warps=4, block_n=max(gluon_block_n(kernel, 4)), block_m=128, sub_block_m=64,
                          num_stages=s, overlap=False) for s in (2, 3)]
    if bm < 128:
        variants += [dict(n_fastest=True), dict(sub_block_m=bm // 2, n_fastest=True)]
    for kw in variants:
        try:
            cfg = replace(base, tail_block_m=None, **kw)
        except ValueError:      # not a valid body width for this tile (GemmConfig checks)
            continue
        # the activation ring within shared memory; overlap's second operand spills at 256 tokens (NOTES "v9")
        if cfg.num_stages * cfg.block_m * 256 <= 196608 and not (cfg.overlap and cfg.block_m > 128):
            out.append(cfg)
    if base.tail_block_m and base.n_fastest is None:    # the tail launch's small tiles N-block-major too
        out.append(replace(base, n_fastest=True))
    return list(dict.fromkeys(out))


def group_candidates(base: GemmConfig) -> list[GemmConfig]:
    """`base` (the shipped pick), then its N-block-major grid in groups of 2 / 4 / 8 token tiles (`group_m`: an
    expert's next tile takes each channel block right after its first, weights from L2; NOTES "v20"); a tile-major
    pick also as plain N-block-major."""
    if base.kernel != "gluon":
        return [base]
    nfast = base if base.grid_n_fastest else replace(base, n_fastest=True)
    return list(dict.fromkeys([base, nfast] + [replace(nfast, group_m=g) for g in (2, 4, 8)]))


def candidates(per_expert: float, regcap: bool = False, gluon: bool = False, kernel: str = "gemm1") -> list[GemmConfig]:
    """Configs to compare (BLOCK_K is fixed in grouped_gemm: never a tunable). `regcap`: the decode
    configs with and without a 128-register cap (4 CTAs of 128 threads per SM instead of 3), and an
    8-warp tile (more warps per scheduler another way). `gluon`: the Triton decode config, then the
    Gluon kernel's (kernels/wgmma_gemm.py) over block_n and stages."""
    if gluon and per_expert > 64:      # prefill / mid: the Triton 128x128 tile vs the Gluon big-token tiles
        bn4, bn8 = (32, 64) if kernel == "gemm1" else (64, 128)
        return [GemmConfig(128, 128, False, 8, 3)] + [
            GemmConfig(bm, bn, True, w, s, kernel="gluon", tail_block_m=tail)
            for bm, bn, w, s, tail in ((256, bn8, 8, 2, None), (256, bn8, 8, 2, 64), (256, bn8, 8, 3, 64),
                                       (128, bn8, 8, 2, None), (128, bn8, 8, 3, None), (128, bn8, 8, 3, 32),
                                       (128, bn4, 4, 3, None), (64, bn8, 8, 3, None))]
    if gluon and per_expert <= 64:
        bm = 8 if per_expert <= 8 else (16 if per_expert <= 16 else (32 if per_expert <= 32 else 64))
        bns = (32, 64) if kernel == "gemm1" else (64, 128)
        return [GemmConfig(max(bm, 16), 64, True, 4, 3)] + [
            GemmConfig(bm, bn, True, 4, s, kernel="gluon") for bn in bns for s in (2, 3, 4)]
    if regcap and per_expert <= 64:
        bm = 16 if per_expert <= 16 else (32 if per_expert <= 32 else 64)
        # NOTES: bn = 32 with swap compiles to mma.sync (different bits; rejected by check_gpu_config);
        # bn = 128 with 8 warps = two warpgroups per CTA (181 registers for GEMM1).
        base = [GemmConfig(bm, 64, True, 4, 3), GemmConfig(bm, 64, True, 4, 4)]
        return base + [GemmConfig(c.block_m, c.block_n, c.swap_ab, c.num_warps, c.num_stages, c.decode,
                                  maxnreg=128) for c in base] + [GemmConfig(bm, 128, True, 8, 3)]
    if per_expert <= 64:
        bm = 16 if per_expert <= 16 else (32 if per_expert <= 32 else 64)
        base = [GemmConfig(bm, 64, True, 4, 3), GemmConfig(bm, 64, True, 4, 4)]
    else:
        base = [GemmConfig(128, 128, False, 8, 3), GemmConfig(128, 64, False, 8, 3), GemmConfig(128, 64, False, 4, 3)]
    return base + [GemmConfig(c.block_m, c.block_n, c.swap_ab, c.num_warps, c.num_stages, c.decode, fuse_gate_up=True)
                   for c in base]


def describe(kernel) -> str:
    """Registers, spills and the MMA / shared-memory instructions of a compiled kernel."""
    ptx = kernel.asm.get("ptx", "")
    counts = {op: ptx.count(op) for op in ("wgmma.mma_async", "mma.sync", "prmt.b32", "ld.shared", "st.shared",
                                             "ldmatrix", "cp.async", "ld.local", "st.local", "bar.sync")}
    return f"regs={kernel.n_regs} spills={kernel.n_spills} " + " ".join(f"{k}={v}" for k, v in counts.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="dsv3")
    ap.add_argument("--tokens", default="1,128,8192")
    ap.add_argument("--json", default=None)
    ap.add_argument("--regcap", action="store_true", help="decode configs with / without maxnreg=128")
    ap.add_argument("--gluon", action="store_true", help="the Gluon decode kernels vs the Triton decode config")
    ap.add_argument("--overlap", action="store_true",
                    help="the shipped config (autotune cache or heuristic) vs its overlap=True variants")
    ap.add_argument("--n-blocks", action="store_true",
                    help="the shipped config (autotune cache or heuristic) vs its n_blocks = 2 / 4 variants")
    ap.add_argument("--block-n", action="store_true", help="with --n-blocks: also the other 4-warp block_n")
    ap.add_argument("--prefetch", action="store_true",
                    help="the shipped config (autotune cache or heuristic) vs its other prefetch depth (and prefetch=2 capped)")
    ap.add_argument("--sub-narrow", action="store_true",
                    help="a tail-split pick vs the same tile with a 32 / 64-token body and no tail launch")
    ap.add_argument("--sub", action="store_true",
                    help="the shipped config (autotune cache or heuristic) vs token tiles with a narrower second body")
    ap.add_argument("--group", action="store_true",
                    help="the shipped config (autotune cache or heuristic) vs its grid in groups of token tiles")
    ap.add_argument("--three-quarter", action="store_true",
                    help="the shipped config (autotune cache or heuristic) vs its three-quarter body")
    ap.add_argument("--tq-caps", default="",
                    help="with --three-quarter: also each three-quarter variant under these register caps, e.g. 96,128")
    ap.add_argument("--tma-b", action="store_true",
                    help="the shipped config vs the same tile with 3 stages and with the TMA-fed activation ring "
                         "(GEMM1 timed with the sorted row copy it reads)")
    ap.add_argument("--ring-overlap", action="store_true",
                    help="the shipped config (autotune cache or heuristic) vs the code ring with overlap")
    args = ap.parse_args()
    wl = WORKLOADS[args.workload]
    e, k, h, i = wl.num_experts, wl.topk, wl.hidden, wl.intermediate
    w1, w1_sf = random_mxfp4_weights(e, 2 * i, h, seed=1)
    w2, w2_sf = random_mxfp4_weights(e, h, i, seed=2)
    l1, l2 = tmoe.transform_weights_for_mega_moe((w1, w1_sf), (w2, w2_sf))
    results = []
    for t in (int(v) for v in args.tokens.split(",")):
        buf = tmoe.get_symm_buffer_for_mega_moe(None, e, t, k, h, i)
        idx, tw = make_routing(t, e, k, "uniform", seed=t)
        x = torch.randn(t, h, device="cuda").to(torch.bfloat16)
        tmoe.layer.fill_buffer(buf, x, idx, tw)
        mxfp8_to_bf16(buf.x[:t], buf.x_sf[:t], buf.x_dq)
        plan = build_routing(buf.topk_idx[:t], e, capacity_slots=t * k)
        touched = int(torch.unique(idx).numel())
        per_expert = t * k / e
        ref1 = ref2 = None
        def configs(kernel):
            if (args.overlap or args.n_blocks or args.prefetch or args.ring_overlap or args.sub or args.group
                    or args.sub_narrow or args.three_quarter or args.tma_b):  # the pick:
                pick = select_config(kernel, t * k, e, False, num_experts=e, hidden=h,  # the cache's, else heuristic
                                     intermediate=i, topk=k, hopper=True, device_name=torch.cuda.get_device_name())
                if args.prefetch:
                    return prefetch_candidates(pick)
                if args.sub_narrow:
                    return narrow_sub_candidates(pick)
                if args.tma_b:
                    return tma_b_candidates(pick)
                if args.three_quarter:
                    return three_quarter_candidates(pick, tuple(int(c) for c in args.tq_caps.split(",") if c))
                if args.sub:
                    return sub_candidates(pick, kernel)
                if args.group:
                    return group_candidates(pick)
                if args.ring_overlap:
                    return ring_overlap_candidates(pick)
                return overlap_candidates(pick) if args.overlap else n_blocks_candidates(pick, kernel, args.block_n)
            return candidates(per_expert, args.regcap, args.gluon, kernel)
        for kernel in ("gemm1", "gemm2"):
            for cfg in configs(kernel):
                if kernel == "gemm1":
                    # NOTES: a tma_b GEMM1 copies the tokens into the plan's order first: timed with it
                    fn = lambda: grouped_gemm.gemm1_swiglu(buf.x_dq, l1[0], l1[1], plan, buf.topk_weights, buf.act,
                                                           topk=k, clamp=wl.clamp, fast_math=True, cfg=cfg, soft=False,
                                                           quad=is_quad(l1), tiled=is_tiled(l1),
                                                           rows_scratch=buf.slot_out)
                    out = buf.act
                    wbytes = touched * 2 * i * h * (0.5 + 1 / 32)
                else:
                    fn = lambda: grouped_gemm.gemm2(buf.act, l2[0], l2[1], plan, buf.slot_out, cfg=cfg, soft=False,
                                                    quad=is_quad(l2), tiled=is_tiled(l2))
                    out = buf.slot_out
                    wbytes = touched * i * h * (0.5 + 1 / 32)
                try:
                    compiled = fn()
                    torch.cuda.synchronize()
                    info = describe(compiled)
                    snap = out[: t * k].clone()
                    if kernel == "gemm1":
                        ref1 = snap if ref1 is None else ref1
                        same = bool(torch.equal(snap, ref1))
                    else:
                        ref2 = snap if ref2 is None else ref2
                        same = bool(torch.equal(snap, ref2))
                    us = time_graph(fn, reps=20)
                except Exception as exc:  # noqa: BLE001 - a config that fails to compile is reported
                    print(f"{kernel} T={t} {cfg}: FAILED {exc!s:.200}", flush=True)
                    continue
                flops = 2 * t * k * h * i * (2 if kernel == "gemm1" else 1)
                row = {"workload": wl.name, "tokens": t, **cfg.as_dict(), "gemm": kernel, "us": us,
                       "weight_gbps": wbytes / us / 1e3, "tflops": flops / us / 1e6, "same_as_first": same,
                       "compiled": info}
                results.append(row)
                print(f"{kernel} T={t:5} bm={cfg.block_m:3} bn={cfg.block_n:3} swap={int(cfg.swap_ab)} "
                      f"w={cfg.num_warps} s={cfg.num_stages} fuse={int(cfg.fuse_gate_up)} maxnreg={cfg.maxnreg} "
                      f"tail={cfg.tail_block_m} sub={cfg.sub_block_m} nf={cfg.n_fastest} grp={cfg.group_m} "
                      f"ovl={int(cfg.overlap)} tq={int(cfg.three_quarter)} tma={int(cfg.tma_b)} "
                      f"nb={cfg.n_blocks} pf={cfg.prefetch} {cfg.kernel:6}: "
                      f"{us:9.1f} us "
                      f"{row['weight_gbps']:6.0f} GB/s {row['tflops']:6.1f} TFLOP/s same={same} | {info}", flush=True)
            if kernel == "gemm1":
                # GEMM2 must see one fixed intermediate: recompute it with the first config.
                first = configs("gemm1")[0]
                grouped_gemm.gemm1_swiglu(buf.x_dq, l1[0], l1[1], plan, buf.topk_weights, buf.act, topk=k,
                                          clamp=wl.clamp, fast_math=True, cfg=first, soft=False, quad=is_quad(l1),
                                          tiled=is_tiled(l1))
        buf.destroy()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
