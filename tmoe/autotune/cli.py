"""tmoe-autotune: tune the grouped GEMMs' tile configurations for this GPU and these MoE shapes.

    tmoe-autotune --workload dsv3                                   # all token buckets, gemm1 + gemm2
    tmoe-autotune --num-experts 128 --hidden 2880 --intermediate 2880 --topk 4 --tokens 1,32,512
    tmoe-autotune --workload qwen3 --max-candidates 16 --time-budget 600
    tmoe-autotune --show                                            # what is cached for this GPU
    python -m tmoe.autotune ...                                     # the same

For every tokens bucket T and kernel, candidates (block_m, block_n, swap_ab, num_warps,
num_stages, FP4 decode; never BLOCK_K, i.e. never the reduction order) are run on random MXFP4
weights with uniform distinct top-k routing. Each candidate's output is checked ONCE against the
float64 reference (tmoe.reference.reference_moe, on the first --check-tokens tokens) and bitwise
against the first valid candidate; a wrong one is discarded with a WARNING line. Valid candidates
are timed as CUDA-graph replays (median of --reps, L2 flushed before each replay). The best and
runner-up per bucket go to <output dir>/<device>/<kernel>_E.._H.._I.._K.._w4a8.json, which the
layer reads at run time (tmoe.kernels.configs.select_config). See docs/autotune.md.

Without a GPU the kernels run under the Triton interpreter (CUDA graphs do not exist there): the
time is the wall-clock of one call and the candidates are small interpreter-friendly tiles. That
mode exists to test the tool; its numbers say nothing about GPU performance.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from ..workloads import WORKLOADS as _WORKLOADS, random_mxfp4_weights
from .timing import time_graph

WORKLOADS = {name: (w.num_experts, w.topk, w.hidden, w.intermediate, w.clamp)   # DESIGN.md §6
             for name, w in _WORKLOADS.items()}
DEFAULT_TOKENS = "1,8,32,128,512,2048,8192"
TUNABLE_KERNELS = ("gemm1", "gemm2")
UNTUNABLE_KERNELS = ("quant", "combine", "dispatch")
_FROM_WORKLOAD = object()       # --activation-clamp not given
NAN_BF16_BITS = 0x7FC0          # a bf16 NaN, as the int16 the scratch buffers hold

# GPU search space (filtered by check_gpu_config and the rules in `candidate_space`).
GPU_BLOCK_M = (16, 32, 64, 128, 256)
GPU_BLOCK_N = (64, 128, 256)
GPU_MAXNREG = (None, 128)        # 128: 4 CTAs of 128 threads per SM (decode GEMM1 needs 165 otherwise)
GPU_WARPS = (4, 8)
GPU_STAGES = (2, 3, 4)
# Interpreter (CPU) search space: the only sizes that run in reasonable time there.
SOFT_BLOCK_M = (16, 32)
SOFT_BLOCK_N = (32, 64)


# ----------------------------------------------------------------------------- search space
def _log2(v: float) -> float:
    return math.log2(v)


def _distance(cfg, base) -> float:
    """How far a candidate is from the heuristic's choice (candidates are tried nearest first)."""
    from ..kernels.configs import DECODE_MODES
    return (abs(_log2(cfg.block_m) - _log2(base.block_m)) + abs(_log2(cfg.block_n) - _log2(base.block_n))
            + (cfg.swap_ab != base.swap_ab) + abs(_log2(cfg.num_warps) - _log2(base.num_warps))
            + 0.5 * abs(cfg.num_stages - base.num_stages)
            + 2.0 * (cfg.decode != base.decode) + 0.25 * DECODE_MODES.index(cfg.decode)
            + 0.75 * (cfg.fuse_gate_up != base.fuse_gate_up) + 0.75 * (cfg.maxnreg != base.maxnreg)
            + 1.0 * (cfg.kernel != base.kernel) + 0.5 * (cfg.overlap != base.overlap))


def candidate_space(kernel: str, num_tokens: int, *, num_experts: int, hidden: int, intermediate: int, topk: int,
                    soft: bool, num_local_experts: int | None = None, hopper: bool = False) -> list:
    """Ordered candidate GemmConfigs for one (kernel, tokens bucket); the heuristic's config comes first.

    GPU (soft=False): block_m x block_n x swap_ab x num_warps x num_stages x decode (x fused gate+up
    tile for gemm1), keeping only
    configs that pass `configs.check_gpu_config` (wgmma-eligible: results bitwise independent of
    the config) and whose fp32 accumulators fit in <= 128 registers per thread; block_m is capped
    by the expected rows per expert tile, block_n by the output width. Interpreter (soft=True):
    block_m 16/32, block_n 32/64, swap_ab both, 1 warp, 1 stage (decode is irrelevant there).
    `hopper` (an sm_90 GPU) adds the Gluon kernel's configs (kernels/wgmma_gemm.py: block_m 8..128 with
    4 warps, block_n 32/64 for gemm1 and 64/128 for gemm2; block_m 64..256 with 8 warps, block_n 64 /
    128; tail tiles; 2-4 stages within 192 KB of activation ring; block_m within the rows cap).
    Truncate the list for a size limit: the order is nearest-to-heuristic first.
    """
    from ..kernels.configs import DECODE_MODES, GemmConfig, check_gpu_config, gluon_block_n, heuristic_config
    if kernel not in TUNABLE_KERNELS:
        raise ValueError(f"kernel must be one of {TUNABLE_KERNELS}, got {kernel!r}")
    e_local = num_local_experts or num_experts
    slots = max(num_tokens, 1) * topk
    base = heuristic_config(kernel, slots, e_local, soft, hopper)
    out_width = intermediate if kernel == "gemm1" else hidden
    if soft:
        grid = itertools.product(SOFT_BLOCK_M, SOFT_BLOCK_N, (False, True), (1,), (1,), (base.decode,))
    else:
        grid = itertools.product(GPU_BLOCK_M, GPU_BLOCK_N, (False, True), GPU_WARPS, GPU_STAGES, DECODE_MODES)
    per_expert = slots / max(e_local, 1)
    rows_cap = max(16, 4 * (1 << max(0, math.ceil(math.log2(max(per_expert, 1.0))))))
    cols_cap = max(64, 1 << math.ceil(math.log2(out_width)))
    accumulators = 2 if kernel == "gemm1" else 1          # GEMM1 carries gate and up tiles
    cands = []
    fuse_options = (False, True) if kernel == "gemm1" and not soft else (False,)
    maxnreg_options = (None,) if soft else GPU_MAXNREG
    for (bm, bn, swap, warps, stages, decode), fuse, maxnreg in itertools.product(grid, fuse_options, maxnreg_options):
        cfg = GemmConfig(bm, bn, swap, warps, stages, decode, fuse_gate_up=fuse, maxnreg=maxnreg)
        if not soft:
            try:
                check_gpu_config(cfg)
            except ValueError:
                continue
            if accumulators * bm * bn / (32 * warps) > 128:
                continue
            if bm > max(rows_cap, 16 if swap else 64) or bn > cols_cap:
                continue
        cands.append(cfg)
    if hopper and not soft:
        gluon = [(bm, 4, bn, stages) for bm in (8, 16, 32, 64, 128) for bn in gluon_block_n(kernel, 4)
                 for stages in GPU_STAGES]
        gluon += [(bm, 8, bn, stages) for bm in (64, 128, 256) for bn in gluon_block_n(kernel, 8)
                  for stages in GPU_STAGES]
        gluon = [g + (None,) for g in gluon] + [(bm, 8, bn, stages, tail) for bm in (128, 256)
                                                for bn in gluon_block_n(kernel, 8) for stages in (2, 3)
                                                for tail in (32, 64)]
        # NOTES: 2-4 activation stages of block_m x 128 bf16 within 192 KB of shared memory
        # and (offline SASS, benchmarks/NOTES.md) the fp32 accumulators spill past 64 registers per
        # thread with 4 warps, 128 with 8 (the 8-warp kernel's activation addresses are spread over 256 threads)
        # NOTES: tiles of 16-64 tokens N-block-major, as the heuristic's (NOTES "v19": -2..-19% at T = 512 / 2048 on
        # the H100 for every workload); the other order is tried next to a cached pick (seed_current_picks)
        cands += [GemmConfig(bm, bn, True, warps, stages, kernel="gluon", tail_block_m=tail,
                             n_fastest=True if 16 <= bm < 128 else None)
                  for bm, warps, bn, stages, tail in gluon
                  if (bm <= max(rows_cap // 2, 8) or bm == base.block_m) and stages * bm * 256 <= 196608
                  and accumulators * bn * bm / (32 * warps) <= (64 if warps == 4 else 128)]
        # NOTES: decode overlapped with the previous wgmma (`overlap`) can only pay where one 8-warp CTA fills
        # an SM (H100, dsv3 T=2048 GEMM2 128x128: -11% against the same tile, ~1% against the best plain
        # one); smaller tiles already overlap across CTAs and lose occupancy to the second operand's
        # registers, 256-token tiles spill (benchmarks/NOTES.md "v9").
        if rows_cap // 2 >= 128:
            cands += [GemmConfig(128, bn, True, 8, stages, kernel="gluon", tail_block_m=tail, overlap=True)
                      for bn in gluon_block_n(kernel, 8) for stages in (3, 4) for tail in (None, 32)]
    if base in cands:
        cands.remove(base)
    cands.sort(key=lambda c: (_distance(c, base), c.block_m, c.block_n, c.swap_ab, c.num_warps, c.num_stages,
                              DECODE_MODES.index(c.decode), c.fuse_gate_up, c.maxnreg or 0, c.kernel))
    # NOTES: a truncated search (--max-candidates) should still see every family (kernel, warps, block_n,
    # tail split, overlap) once: the nearest config of each family first, then the rest, each part by
    # distance, the heuristic's kernel first.
    def family(c):
        return (c.kernel, c.num_warps, c.block_n, c.tail_block_m is None, c.swap_ab, c.overlap)
    seen = {family(base)}
    heads = [c for c in cands if family(c) not in seen and not seen.add(family(c))]
    cands = heads + [c for c in cands if c not in heads]
    cands.sort(key=lambda c: c.kernel != base.kernel)          # the heuristic's kernel (Gluon on Hopper) first
    triton_base = heuristic_config(kernel, slots, e_local, soft)
    if triton_base != base:      # always time the Triton kernel's heuristic config against the Gluon one
        cands.remove(triton_base)
        cands.insert(0, triton_base)
    return [base] + cands


def seed_current_picks(spaces: dict, device_name: str, num_experts: int, hidden: int, intermediate: int,
                       topk: int) -> None:
    """Put the config the cache currently holds for each (kernel, tokens) (nearest bucket) second in its
    candidate list, right after the heuristic's: a short re-tuning search never loses the current pick."""
    from . import cache
    from ..kernels.configs import CODE_RING_DEPTHS
    for (kern, t), cands in spaces.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", cache.AutotuneCacheWarning)
            current = cache.lookup(kern, device_name, num_experts, hidden, intermediate, topk, t)
        if current is not None and current != cands[0]:
            if current in cands:
                cands.remove(current)
            cands.insert(1, current)
        if current is not None and current.kernel == "gluon":
            # NOTES: n_blocks (channel blocks per program) and prefetch (codes two steps ahead in registers, or
            # through a shared-memory ring) win or lose by a few % around a given tile (H100 / H200 sweeps,
            # benchmarks/NOTES.md "v11", "v15"), so they are tried next to the current pick only
            variants = [replace(current, n_blocks=nb) for nb in (1, 2, 4) if nb != current.n_blocks]
            if not current.overlap:
                depths = (1, 2) + (CODE_RING_DEPTHS if current.num_warps == 4 else ())
                variants += [current.with_k_loop(prefetch=d) for d in depths if d != current.prefetch]
                if current.num_warps == 4:
                    # NOTES: a ring step commits its codes with an activation tile, and waiting for that tile
                    # completes the codes' cp.async group too: a ring hides min(depth, num_stages - 1) steps, so
                    # each depth with num_stages = depth + 1 (whole calls: H100 -0.2..-4.3%, H200 -3.5..-7.1%, NOTES "v22")
                    variants += [current.with_code_ring(d) for d in CODE_RING_DEPTHS if d + 1 != current.num_stages]
            # NOTES: a second, narrower token body (sub_block_m) in the pick's tile or in one twice as large: one
            # weight decode for up to 2x the tokens (H100 T = 2048 GEMM2: dsv3 -11%, gpt-oss -18%, NOTES "v19")
            # NOTES: the three-quarter body (two token parts on one weight decode, no wgmma columns for a tile's empty
            # last quarter: H200 v4flash T = 8192 GEMMs -7 / -10%, NOTES "v31") is tried on or off around the pick
            # NOTES: the TMA-fed activation ring (tma_b: the warpgroups of a tile not in lockstep; H200 T = 8192 GEMM2s
            # -10..-15%, NOTES "v33") is tried on or off too
            for kw in (dict(sub_block_m=current.block_m // 2), dict(block_m=2 * current.block_m,
                                                                  sub_block_m=current.block_m),
                       dict(three_quarter=not current.three_quarter),
                       dict(num_stages=3, tma_b=not current.tma_b)):
                try:
                    variants.append(replace(current, tail_block_m=None, **kw))
                except ValueError:      # no valid body width for this tile
                    pass
            variants.append(replace(current, n_fastest=not current.grid_n_fastest, group_m=None))   # other order
            if current.num_warps == 4 and not current.overlap:
                # NOTES: the grid order and the K loop compound (H100 dsv3 T = 128 GEMM1, whole call: ring 4 -1.3%,
                # the other order -1.6%, both -3.8%; benchmarks/NOTES.md "v21"), so the other order with each K loop
                variants += [current.with_k_loop(prefetch=d, n_fastest=not current.grid_n_fastest, group_m=None)
                             for d in (1,) + CODE_RING_DEPTHS if d != current.prefetch]
            if current.grid_n_fastest:
                # NOTES: N-block-major in groups of tiles (an expert's next tile reads the weights from L2): won
                # for one H100 GEMM (dsv3 GEMM2 T = 2048 -3.2%), lost for the GEMM1s (NOTES "v20")
                variants += [replace(current, group_m=g) for g in (2, 4) if g != current.group_m]
            for pos, variant in enumerate(variants, start=2):
                if variant in cands:
                    cands.remove(variant)
                cands.insert(min(pos, len(cands)), variant)


def short(cfg) -> str:
    return (f"bm={cfg.block_m} bn={cfg.block_n} swap={int(cfg.swap_ab)} w={cfg.num_warps} "
            f"s={cfg.num_stages} {cfg.decode if cfg.kernel == 'triton' else 'gluon'}"
            + (" fused" if cfg.fuse_gate_up else "") + (f" maxnreg={cfg.maxnreg}" if cfg.maxnreg else "")
            + (f" tail={cfg.tail_block_m}" if cfg.tail_block_m else "")
            + (f" sub={cfg.sub_block_m}" if cfg.sub_block_m else "") + (" overlap" if cfg.overlap else "")
            + ("" if cfg.n_fastest is None else f" n_fastest={int(cfg.n_fastest)}")
            + (f" group={cfg.group_m}" if cfg.group_m else "") + (" early" if cfg.early else "")
            + (" tq" if cfg.three_quarter else "") + (" tma" if cfg.tma_b else ""))


# ----------------------------------------------------------------------------- the problem
def random_weights(num_experts: int, hidden: int, intermediate: int, device, seed: int):
    """Random valid canonical MXFP4 w1 [E, 2I, H/2] + scales and w2 [E, H, I/2] + scales."""
    g = torch.Generator(device=device).manual_seed(seed)
    return (*random_mxfp4_weights(num_experts, 2 * intermediate, hidden, device=device, generator=g),
            *random_mxfp4_weights(num_experts, hidden, intermediate, device=device, generator=g))


def uniform_routing(num_tokens: int, num_experts: int, topk: int, seed: int, device):
    """Distinct uniform-random top-k experts per token and routing weights (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(torch.ones(num_tokens, num_experts), topk, replacement=False, generator=g)
    weights = torch.rand(num_tokens, topk, generator=g) / topk + 0.01
    return idx.to(device), weights.to(device)


class TuningProblem:
    """One tokens bucket: inputs in a layer buffer, the routing plan, and the checks of both GEMMs.

    `run(kernel, cfg)` launches one GEMM exactly as the layer does; `output(kernel)` is what it
    wrote (int16 bf16 bits: GEMM1's sorted-slot intermediate, GEMM2's per-slot outputs);
    `check(kernel)` compares that with the float64 reference on the first `check_tokens` tokens
    (every token's result is independent of the others, so a prefix is a faithful sample).
    """

    def __init__(self, weights, num_tokens: int, topk: int, *, device, seed: int = 0, clamp=None,
                 activation: str = "swiglu", check_tokens: int = 64):
        import tmoe
        from ..kernels.configs import heuristic_config
        from ..kernels.numerics import soft_numerics
        from ..kernels.quant import mxfp8_to_bf16
        from ..kernels.routing import build_routing
        from ..layer import fill_buffer
        self.weights = w1, w1_sf, w2, w2_sf = weights
        e, two_i, half_h = w1.shape
        self.num_experts, self.hidden, self.intermediate = e, half_h * 2, two_i // 2
        self.t, self.k = num_tokens, topk
        self.clamp, self.activation = clamp, activation
        self.device = torch.device(device)
        self.soft = soft_numerics(w1)
        self.buf = tmoe.get_symm_buffer_for_mega_moe(None, e, num_tokens, topk, self.hidden, self.intermediate,
                                                     device=self.device, backend="triton")
        self.l1, self.l2 = tmoe.transform_weights_for_mega_moe((w1, w1_sf), (w2, w2_sf), backend="triton")
        self.idx, self.tw = uniform_routing(num_tokens, e, topk, seed + 7919 * num_tokens, self.device)
        g = torch.Generator().manual_seed(seed + 104729 * num_tokens)
        x = torch.randn(num_tokens, self.hidden, generator=g).to(torch.bfloat16).to(self.device)
        fill_buffer(self.buf, x, self.idx, self.tw)
        mxfp8_to_bf16(self.buf.x[:num_tokens], self.buf.x_sf[:num_tokens], self.buf.x_dq)
        self.slots = num_tokens * topk
        self.plan = build_routing(self.buf.topk_idx[:num_tokens], e, capacity_slots=self.slots)
        self.check_tokens = max(1, min(check_tokens, num_tokens))
        self._ref = None
        # GEMM2's input: the intermediate from the heuristic's GEMM1 (bitwise the same for every config).
        self.run("gemm1", heuristic_config("gemm1", self.slots, e, self.soft))   # Triton: runs on any GPU
        self.act_snapshot = self.buf.act[:self.slots].clone()

    def run(self, kernel: str, cfg) -> None:
        from ..kernels import grouped_gemm, weight_layout
        b = self.buf
        if kernel == "gemm1":
            grouped_gemm.gemm1_swiglu(b.x_dq, self.l1[0], self.l1[1], self.plan, b.topk_weights, b.act, topk=self.k,
                                      clamp=self.clamp, fast_math=True, cfg=cfg, soft=self.soft,
                                      activation=self.activation, quad=weight_layout.is_quad(self.l1),
                                      tiled=weight_layout.is_tiled(self.l1), rows_scratch=b.slot_out)
        else:
            grouped_gemm.gemm2(b.act, self.l2[0], self.l2[1], self.plan, b.slot_out, cfg=cfg, soft=self.soft,
                               topk_weights=b.topk_weights, quad=weight_layout.is_quad(self.l2),
                               tiled=weight_layout.is_tiled(self.l2))

    def output(self, kernel: str) -> torch.Tensor:
        return (self.buf.act if kernel == "gemm1" else self.buf.slot_out)[:self.slots]

    def poison(self, kernel: str) -> None:
        """NaN-fill the output (and restore GEMM2's input) so unwritten elements are caught."""
        self.output(kernel).fill_(NAN_BF16_BITS)
        if kernel == "gemm2":
            self.buf.act[:self.slots].copy_(self.act_snapshot)

    def restore_intermediate(self) -> None:
        self.buf.act[:self.slots].copy_(self.act_snapshot)

    def _reference(self):
        if self._ref is None:
            from .. import formats
            from ..reference import MoEWeights, reference_moe, swiglu_fp32
            n, k = self.check_tokens, self.k
            _, o, hs = reference_moe(self.buf.x[:n], self.buf.x_sf[:n], self.idx[:n], self.tw[:n],
                                     MoEWeights(*self.weights), activation_clamp=self.clamp,
                                     activation=self.activation, return_slots=True)
            s = swiglu_fp32(hs.reshape(n * k, -1), self.tw[:n].reshape(-1), self.clamp, self.activation)
            act = formats.dequantize_mxfp8(*formats.quantize_mxfp8(s)).to(torch.bfloat16)
            sorted_slots = self.plan.sorted_slots[:self.slots].long()
            rows = torch.nonzero(sorted_slots < n * k).squeeze(1)
            self._ref = {"gemm1": (rows, act[sorted_slots[rows]]), "gemm2": o.reshape(n * k, -1)}
        return self._ref

    def check(self, kernel: str) -> tuple[float, bool]:
        """(calc_diff vs the float64 reference, any NaN) of the last run's output."""
        from ..reference import calc_diff
        ref = self._reference()
        out = self.output(kernel).view(torch.bfloat16)
        if kernel == "gemm1":
            rows, expected = ref["gemm1"]
            got = out[rows]
        else:
            expected = ref["gemm2"]
            got = out[:expected.shape[0]]
        return calc_diff(got, expected), bool(torch.isnan(got).any())

    def close(self) -> None:
        self.buf.destroy()


# ----------------------------------------------------------------------------- progress
class Progress:
    """A tqdm bar with the best-so-far when tqdm is importable (mode auto/tqdm), else one plain line
    per candidate on stderr; mode "none" prints only warnings."""

    def __init__(self, total: int, desc: str, mode: str = "auto", stream=None):
        self.total, self.desc, self.n = total, desc, 0
        self.stream = stream if stream is not None else sys.stderr
        self.best = None
        self.bar = None
        if mode in ("auto", "tqdm"):
            try:
                from tqdm import tqdm
            except ImportError:
                if mode == "tqdm":
                    raise SystemExit("tmoe-autotune: --progress tqdm needs tqdm (pip install 'tmoe[autotune]')")
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, unit="cfg", file=self.stream, leave=True)
        self.mode = "tqdm" if self.bar is not None else ("none" if mode == "none" else "plain")

    def best_text(self) -> str:
        return f"best {self.best[0]:.1f} us ({short(self.best[1])})" if self.best else "best: none yet"

    def update(self, cfg, us: float | None) -> None:
        self.n += 1
        if us is not None and (self.best is None or us < self.best[0]):
            self.best = (us, cfg)
        if self.bar is not None:
            self.bar.set_postfix_str(self.best_text(), refresh=False)
            self.bar.update(1)
        elif self.mode == "plain":
            got = f"{us:.1f} us" if us is not None else "discarded"
            print(f"[{self.desc} {self.n}/{self.total}] {short(cfg)}: {got} | {self.best_text()}",
                  file=self.stream, flush=True)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- tuning
class _Stop(Exception):
    pass


def tune_bucket(problem: TuningProblem, kernel: str, candidates: list, *, soft: bool, reps: int, warmup: int,
                tolerance: float, deadline: float | None, progress: Progress) -> dict:
    """Check and time each candidate for one (kernel, bucket). Returns {"timed": [(us, cfg)] sorted,
    "tried", "discarded", "stopped"}; `stopped` is set when the deadline passed before the end."""
    timed, tried, discarded, baseline, stopped = [], 0, 0, None, False
    where = f"{kernel} T={problem.t}"
    for cfg in candidates:
        if deadline is not None and time.monotonic() > deadline:
            stopped = True
            break
        tried += 1
        try:
            problem.poison(kernel)
            start = time.perf_counter()
            problem.run(kernel, cfg)
            if not soft:
                torch.cuda.synchronize()
            wall_us = (time.perf_counter() - start) * 1e6
            diff, nan = problem.check(kernel)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a config that fails to compile or launch is skipped
            discarded += 1
            progress.write(f"WARNING: {where}: {cfg} failed to run, discarded: {type(exc).__name__}: {exc!s:.300}")
            progress.update(cfg, None)
            continue
        if nan or not diff <= tolerance:
            discarded += 1
            progress.write(f"WARNING: {where}: discarding {cfg}: WRONG OUTPUT, calc_diff = {diff:.3e} "
                           f"(limit {tolerance:g}){', NaN in output' if nan else ''} vs the float64 reference")
            progress.update(cfg, None)
            continue
        out = problem.output(kernel)
        if baseline is None:
            baseline = (cfg, out.clone())
        elif not torch.equal(out, baseline[1]):
            discarded += 1
            ndiff = int((out != baseline[1]).sum())
            progress.write(f"WARNING: {where}: discarding {cfg}: its output differs bitwise from {baseline[0]} "
                           f"in {ndiff} elements (calc_diff = {diff:.3e}); tuning must not change results")
            progress.update(cfg, None)
            continue
        try:
            us = wall_us if soft else time_graph(lambda: problem.run(kernel, cfg), reps=reps, warmup=warmup)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001
            discarded += 1
            progress.write(f"WARNING: {where}: {cfg} could not be timed, discarded: {exc!s:.300}")
            progress.update(cfg, None)
            continue
        timed.append((us, cfg))
        progress.update(cfg, us)
    timed.sort(key=lambda p: p[0])
    return {"timed": timed, "tried": tried, "discarded": discarded, "stopped": stopped}


def bucket_document(result: dict) -> dict | None:
    from .cache import config_to_dict
    timed = result["timed"]
    if not timed:
        return None
    entry = lambda p: {"config": config_to_dict(p[1]), "us": round(float(p[0]), 3)}  # noqa: E731
    return {"best": entry(timed[0]), "runner_up": entry(timed[1]) if len(timed) > 1 else None,
            "tried": result["tried"], "discarded": result["discarded"]}


# ----------------------------------------------------------------------------- --show
def show(root: Path, out=None) -> int:
    from . import cache
    out = out if out is not None else sys.stdout
    versions = cache.running_versions()
    gpu = torch.cuda.is_available()
    print(f"tmoe autotune cache: {root}", file=out)
    if gpu:
        name = torch.cuda.get_device_name()
        print(f"device: {name} (directory {cache.device_dir_name(name)}); running Triton {versions['triton']}, "
              f"torch {versions['torch']}", file=out)
        files = cache.list_files(root, name)
        if not files:
            print(f"nothing cached for {name}: every lookup uses the built-in heuristic", file=out)
    else:
        print(f"no GPU: the layer never consults the cache on CPU; listing every file under {root} "
              f"(running Triton {versions['triton']}, torch {versions['torch']})", file=out)
        files = cache.list_files(root)
        if not files:
            print("no files", file=out)
    for path in files:
        rel = path.relative_to(root)
        try:
            doc = cache.load(path)
        except (OSError, ValueError) as exc:
            print(f"{rel}: INVALID ({exc})", file=out)
            continue
        stale = "" if doc["triton"] == versions["triton"] else (
            f"  [ignored at run time: tuned with Triton {doc['triton']}, running {versions['triton']}]")
        print(f"{rel}: {doc['kernel']} E={doc['num_experts']} H={doc['hidden']} I={doc['intermediate']} "
              f"K={doc['topk']} {doc['dtype']} on {doc['device']!r}, Triton {doc['triton']}, torch {doc['torch']}, "
              f"{doc['date']}{stale}", file=out)
        for b, v in doc["buckets"].items():
            best = cache.config_from_dict(v["best"]["config"])
            ru = v["runner_up"]
            ru_text = (f" | runner-up {short(cache.config_from_dict(ru['config']))} {ru['us']:.1f} us"
                       if ru else "")
            print(f"  T={b:>5}: {short(best)} {v['best']['us']:.1f} us{ru_text}", file=out)
    return 0


# ----------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tmoe-autotune", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_upper_first(__doc__.split("\n\n", 1)[0].split(": ", 1)[1]) + "\n\n" + __doc__.split("\n\n", 1)[1],
        epilog="Tunable kernels: gemm1 (GEMM1 + SwiGLU + MXFP8 requant) and gemm2. The MXFP8 quantizer "
               "(quant), the combine and the dispatch have no tunables yet; asking for them is an error.")
    shape = ap.add_argument_group("problem (a --workload, or all four shape options; options override a workload)")
    shape.add_argument("--workload", choices=sorted(WORKLOADS),
                       help="; ".join(f"{k}: E={v[0]} K={v[1]} H={v[2]} I={v[3]}" + (f" clamp {v[4]:g}" if v[4] else "")
                                      for k, v in WORKLOADS.items()))
    shape.add_argument("--num-experts", type=int, help="E, global experts (tuned with all of them on this GPU)")
    shape.add_argument("--hidden", type=int, help="H (multiple of 32)")
    shape.add_argument("--intermediate", type=int, help="I (multiple of 32)")
    shape.add_argument("--topk", type=int, help="K, experts per token (<= E, <= 32)")
    shape.add_argument("--activation", choices=("swiglu", "swiglu_oai"), default="swiglu")
    shape.add_argument("--activation-clamp", "--clamp", type=_clamp, default=_FROM_WORKLOAD,
                       help="SwiGLU clamp (a number or 'none'; default: the workload's, else none)")
    ap.add_argument("--tokens", default=DEFAULT_TOKENS,
                    help=f"tokens-per-rank buckets, comma separated (default {DEFAULT_TOKENS})")
    ap.add_argument("--kernels", default="gemm1,gemm2",
                    help="kernels to tune, comma separated: gemm1, gemm2 (default both). quant, combine and "
                         "dispatch have no tunables yet")
    ap.add_argument("--max-candidates", type=int, default=32,
                    help="search-space size limit per (kernel, bucket), nearest to the heuristic first (default 32)")
    ap.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                    help="stop after this many seconds and write what was found (default: no limit)")
    ap.add_argument("--output-dir", default=None,
                    help="cache directory to write (and --show) (default: $TMOE_AUTOTUNE_CACHE, else the repo's "
                         "autotune_cache/); files go to <dir>/<device>/")
    ap.add_argument("--show", action="store_true", help="list what is cached for this GPU (no GPU: every file)")
    ap.add_argument("--list-candidates", action="store_true", help="print the candidates per bucket and exit")
    ap.add_argument("--reps", type=int, default=20, help="CUDA-graph replays per candidate (median; default 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--check-tokens", type=int, default=64,
                    help="tokens checked against the float64 reference per bucket (default 64)")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max calc_diff vs the reference (default 1e-4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-merge", action="store_true",
                    help="replace existing files instead of keeping their buckets that this run does not re-tune")
    ap.add_argument("--progress", choices=("auto", "tqdm", "plain", "none"), default="auto",
                    help="auto: a tqdm bar if tqdm is installed (pip install 'tmoe[autotune]'), else one line per "
                         "candidate")
    return ap


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _clamp(text: str):
    if text.lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"the clamp must be a finite number >= 0, got {text!r}")
    return value


def parse_kernels(text: str) -> list[str]:
    names = [k.strip().lower() for k in text.split(",") if k.strip()]
    if not names:
        raise ValueError("--kernels is empty; choose from gemm1, gemm2")
    for name in names:
        if name in UNTUNABLE_KERNELS:
            raise ValueError(f"--kernels {name}: the {name} kernel has no tunables yet (only "
                             f"{', '.join(TUNABLE_KERNELS)} can be tuned)")
        if name not in TUNABLE_KERNELS:
            raise ValueError(f"--kernels: unknown kernel {name!r}; tunable: {', '.join(TUNABLE_KERNELS)} "
                             f"(no tunables yet: {', '.join(UNTUNABLE_KERNELS)})")
    return list(dict.fromkeys(names))


def parse_tokens(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--tokens must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--tokens must be integers >= 1, got {text!r}")
    return sorted(set(values))


def resolve_shape(args) -> tuple[int, int, int, int, float | None]:
    e = k = h = i = None
    clamp = None
    if args.workload:
        e, k, h, i, clamp = WORKLOADS[args.workload]
    e = args.num_experts if args.num_experts is not None else e
    h = args.hidden if args.hidden is not None else h
    i = args.intermediate if args.intermediate is not None else i
    k = args.topk if args.topk is not None else k
    missing = [n for n, v in (("--num-experts", e), ("--hidden", h), ("--intermediate", i), ("--topk", k)) if v is None]
    if missing:
        raise ValueError(f"choose a --workload ({', '.join(WORKLOADS)}) or give {', '.join(missing)}")
    if e < 1 or k < 1 or k > min(e, 32):
        raise ValueError(f"need 1 <= --topk <= min(--num-experts, 32), got topk={k}, num_experts={e}")
    for name, v in (("--hidden", h), ("--intermediate", i)):
        if v < 32 or v % 32:
            raise ValueError(f"{name} must be a positive multiple of 32, got {v}")
    if args.activation_clamp is not _FROM_WORKLOAD:
        clamp = args.activation_clamp
    return e, k, h, i, clamp


def _kernels_interpreted() -> bool:
    from ..kernels import grouped_gemm
    return type(grouped_gemm._gemm1_swiglu_kernel).__name__ == "InterpretedFunction"


def _rerun_interpreted(argv) -> int:
    """Without a GPU the kernels must be defined under TRITON_INTERPRET=1, which is read when tmoe is
    imported: run this command again in a child process with it set."""
    if os.environ.get("TMOE_AUTOTUNE_CHILD") == "1":
        raise SystemExit("tmoe-autotune: no GPU and the Triton kernels are not interpreted even with "
                         "TRITON_INTERPRET=1; cannot run")
    pkg_root = str(Path(__file__).resolve().parent.parent.parent)
    env = dict(os.environ, TRITON_INTERPRET="1", TMOE_AUTOTUNE_CHILD="1",
               PYTHONPATH=os.pathsep.join(filter(None, [pkg_root, os.environ.get("PYTHONPATH")])))
    argv = sys.argv[1:] if argv is None else list(argv)
    return subprocess.call([sys.executable, "-m", "tmoe.autotune", *argv], env=env)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    from . import cache
    root = Path(args.output_dir).expanduser() if args.output_dir else cache.cache_dir()
    if args.show:
        return show(root)
    try:
        kernels = parse_kernels(args.kernels)
        tokens = parse_tokens(args.tokens)
        e, k, h, i, clamp = resolve_shape(args)
    except ValueError as exc:
        ap.error(str(exc))
    if args.max_candidates < 1:
        ap.error(f"--max-candidates must be >= 1, got {args.max_candidates}")
    if args.reps < 1 or args.warmup < 0 or args.check_tokens < 1:
        ap.error("--reps and --check-tokens must be >= 1, --warmup >= 0")
    if args.time_budget is not None and args.time_budget <= 0:
        ap.error(f"--time-budget must be > 0 seconds, got {args.time_budget}")

    gpu = torch.cuda.is_available()
    soft = not gpu
    from ..kernels.configs import is_hopper
    hopper = gpu and is_hopper(torch.device("cuda"))
    spaces = {(kern, t): candidate_space(kern, t, num_experts=e, hidden=h, intermediate=i, topk=k, soft=soft,
                                         hopper=hopper) for t in tokens for kern in kernels}
    if gpu:
        seed_current_picks(spaces, torch.cuda.get_device_name(), e, h, i, k)
    if args.list_candidates:
        for (kern, t), cands in spaces.items():
            use = cands[:args.max_candidates]
            print(f"{kern} T={t}: {len(use)} of {len(cands)} candidates (heuristic first)")
            for cfg in use:
                print(f"  {short(cfg)}")
        return 0
    if soft and not _kernels_interpreted():
        return _rerun_interpreted(argv)

    start = time.monotonic()
    deadline = start + args.time_budget if args.time_budget is not None else None
    device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
    dev_name = torch.cuda.get_device_name(device) if gpu else cache.CPU_DEVICE
    versions = cache.running_versions()
    print(f"tmoe-autotune: E={e} K={k} H={h} I={i} clamp={clamp} activation={args.activation}; tokens {tokens}; "
          f"kernels {kernels}; on {dev_name} (Triton {versions['triton']}, torch {versions['torch']}); "
          f"writing to {root / cache.device_dir_name(dev_name)}", flush=True)
    if soft:
        print("NOTE: no GPU - the kernels run under the Triton interpreter; each time is the wall-clock of one "
              "call and candidates are small interpreter tiles. Use this only to test the tool.", flush=True)

    weights = random_weights(e, h, i, device, seed=args.seed)
    found: dict[str, dict] = {kern: {} for kern in kernels}
    heuristic_us: dict[tuple, float] = {}
    written: dict[str, Path] = {}
    stopped = False
    extra = dict(workload=args.workload, activation=args.activation, activation_clamp=clamp,
                 num_local_experts=e, timing="wall-clock, Triton interpreter" if soft else "cuda-graph median, L2 flushed")

    def write_all() -> None:
        for kern, buckets in found.items():
            if buckets:
                doc = cache.make_document(device=dev_name, kernel=kern, num_experts=e, hidden=h, intermediate=i,
                                          topk=k, buckets=buckets, **extra)
                written[kern] = cache.save(doc, root, merge=not args.no_merge)

    try:
        for t in tokens:
            if deadline is not None and time.monotonic() > deadline:
                stopped = True
                break
            problem = TuningProblem(weights, t, k, device=device, seed=args.seed, clamp=clamp,
                                    activation=args.activation, check_tokens=args.check_tokens)
            try:
                for kern in kernels:
                    cands = spaces[(kern, t)][:args.max_candidates]
                    progress = Progress(len(cands), f"{kern} T={t}", args.progress)
                    try:
                        result = tune_bucket(problem, kern, cands, soft=soft, reps=args.reps, warmup=args.warmup,
                                             tolerance=args.tolerance, deadline=deadline, progress=progress)
                    finally:
                        progress.close()
                    if kern == "gemm1":
                        problem.restore_intermediate()
                    base_us = next((us for us, c in result["timed"] if c == cands[0]), None)
                    if base_us is not None:
                        heuristic_us[(kern, t)] = base_us
                    entry = bucket_document(result)
                    if entry is not None:
                        found[kern][str(t)] = entry
                    elif result["tried"]:
                        print(f"WARNING: {kern} T={t}: no valid candidate ({result['tried']} tried); "
                              "nothing recorded for this bucket", file=sys.stderr, flush=True)
                    if result["stopped"]:
                        stopped = True
                        break
            finally:
                problem.close()
                del problem
                if gpu:
                    torch.cuda.empty_cache()
            write_all()
            if stopped:
                break
    except KeyboardInterrupt:
        stopped = True
        print("\ninterrupted: writing what was found", file=sys.stderr, flush=True)
        write_all()
    if stopped:
        print(f"stopped after {time.monotonic() - start:.0f} s (time budget {args.time_budget} s or interrupt); "
              "the results so far are written", flush=True)

    any_found = False
    for kern in kernels:
        for t in tokens:
            v = found[kern].get(str(t))
            if v is None:
                continue
            any_found = True
            best = cache.config_from_dict(v["best"]["config"])
            base = heuristic_us.get((kern, t))
            vs = (f" | heuristic {base:.1f} us -> {base / v['best']['us']:.2f}x" if base else "")
            ru = v["runner_up"]
            ru_text = f" | runner-up {ru['us']:.1f} us" if ru else ""
            print(f"{kern} T={t:>5}: best {short(best)} {v['best']['us']:.1f} us{ru_text}{vs}")
        if kern in written:
            print(f"wrote {written[kern]}")
    if not any_found and not stopped:
        print("no valid candidate was found for any bucket; nothing written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
