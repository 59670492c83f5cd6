"""Tile configurations of the grouped GEMMs and the built-in heuristic that picks one.

Only M/N tiling, warps and stages are tunable; BLOCK_K (the reduction step) is fixed in
`grouped_gemm.BLOCK_K`, so no configuration can change a result (DESIGN.md §1.1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

__all__ = ["GemmConfig", "heuristic_config", "check_gpu_config", "select_config", "is_hopper", "is_half_tile",
           "half_tile_block_n", "HALF_TILE_ROWS_PER_WARP", "gluon_block_n", "DECODE_MODES", "KERNELS"]

DECODE_MODES = ("arith", "asm", "dot_scaled")
KERNELS = ("triton", "gluon")
# Gluon kernel: block_n per GEMM and warp count (the A tile is block_n weight rows, GEMM1's gate + up
# 2 x block_n; with 8 warps two warpgroups split a 128-row A tile and share the activation tile).
GLUON_BLOCK_N = {"gemm1": (32, 64), "gemm2": (64, 128)}
GLUON_BLOCK_N_8_WARPS = {"gemm1": (64,), "gemm2": (128,)}
MAX_CODE_RING = 8    # GemmConfig.prefetch: the deepest shared-memory code ring (8 x 8 KB at 128 weight rows)
CODE_RING_DEPTHS = (3, 4, 6)   # the ring depths the autotuner and sweeps try next to a 4-warp pick


HALF_TILE_ROWS_PER_WARP = 8     # a half tile's weight rows per warp (the wgmma's m16 slice: the other 8 are zeros)


def half_tile_block_n(kernel: str, num_warps: int) -> int | None:
    """block_n of the gluon `kernel`'s half tile with `num_warps` warps, or None (GEMM1 with 4 warps). A half tile
    has 8 weight rows per warp: each warp's m16 slice of the wgmma holds 8 weight rows and 8 rows of zeros, so a
    thread decodes one row per K step instead of two (wgmma_gemm._half_rows; same bits). GEMM1 has no 4-warp one:
    its MXFP8 requant needs 32 channels per tile. Measured as whole calls (H100 / H200, T = 1 and 8, NOTES "v24"):
    slower than the full tiles nearly everywhere, one H100 pick (qwen3 GEMM2 at T = 1, -2.7%); so they are valid
    configs outside the autotuner's space (benchmarks/tune_layer_small.py --space half times them)."""
    block_n = HALF_TILE_ROWS_PER_WARP * num_warps // (2 if kernel == "gemm1" else 1)
    return block_n if block_n % 32 == 0 else None


def gluon_block_n(kernel: str, num_warps: int, half: bool = False) -> tuple:
    """The full-tile block_n values of the gluon `kernel` with `num_warps` warps (the autotuner's), and with `half`
    its half tile's (half_tile_block_n) too: every valid one."""
    full = GLUON_BLOCK_N_8_WARPS[kernel] if num_warps == 8 else GLUON_BLOCK_N[kernel]
    half_bn = half_tile_block_n(kernel, num_warps) if half else None
    return full + ((half_bn,) if half_bn else ())


@dataclass(frozen=True)
class GemmConfig:
    block_m: int          # slots (tokens) per tile
    block_n: int          # output channels per tile (multiple of 32: MXFP8 groups in GEMM1)
    swap_ab: bool         # weights on the MMA M side, tokens on N (few tokens per expert)
    num_warps: int = 4
    num_stages: int = 3
    decode: str = "asm"       # GPU FP4 decode: "asm" (PTX byte permutes), "dot_scaled", "arith"
    fuse_gate_up: bool = False  # GEMM1: one weight tile of gate + up rows and one MMA twice as wide
    maxnreg: int | None = None  # register cap per thread (more CTAs per SM, maybe spills); None = compiler's
    kernel: str = "triton"      # "gluon": kernels/wgmma_gemm.py (Hopper; swap-AB, 4 or 8 warps, MXFP4
                                # decoded straight into the wgmma register operand)
    tail_block_m: int | None = None  # gluon: each expert's last <= tail_block_m rows in a second launch of
                                     # tail_block_m-token tiles, the rest in block_m tiles (wgmma_gemm.SPLIT_*)
    overlap: bool = False       # gluon: decode each K step while the previous step's wgmma runs (a second A
                                # operand's registers; the ring keeps num_stages - 2 tiles ahead); with prefetch
                                # >= 3 the code ring's loop does it (NOTES "v18")
    n_blocks: int = 1           # gluon: adjacent block_n channel blocks per program (one tile search and program
                                # start per n_blocks weight passes: short K loops)
    prefetch: int = 1           # gluon: K steps of weight codes in flight ahead of the decode (2: in registers, a
                                # two-step loop body, 128 registers, for grids of few programs per SM; 3-8, 4-warp
                                # tiles: through a shared-memory ring that deep, ~70 registers; NOTES "v12", "v15";
                                # a ring hides only ring_lookahead steps: num_stages = prefetch + 1, NOTES "v22")
    sub_block_m: int | None = None  # gluon: a tile whose expert has at most sub_block_m rows left runs a
                                    # sub_block_m-token body (smaller wgmmas) in the same program: block_m-token
                                    # tiles that decode each weight block once, without block_m-wide MMAs for few rows
    n_fastest: bool | None = None   # gluon: the grid runs all channel blocks of a token tile next to each other
                                    # (its activation rows read once from HBM, then from L2) instead of all tiles of
                                    # a channel block; None: for tiles of >= 128 tokens (wgmma_gemm._tile_pids)
    group_m: int | None = None      # gluon, N-block-major grids: group_m adjacent token tiles take each channel block
                                    # in turn (an expert's next tile finds that block's weights in L2, NOTES "v20")
    early: bool = False             # gluon GEMM2 picks: start each program once GEMM1 has finished its expert's rows
                                    # (per-expert counters) instead of all of GEMM1 (kernels/pdl.py "early GEMM2",
                                    # NOTES "v26", "v28"); TMOE_EARLY_GEMM2=0|1 overrides it
    three_quarter: bool = False     # gluon, plain K loop: a tile with at most 3/4 block_m rows (and more than
                                    # sub_block_m) runs a block_m/2 + block_m/4-token body: two wgmma accumulators on
                                    # the same decoded weights, no wgmma columns for the empty last quarter (v4flash
                                    # T = 8192: 192 rows per expert in 256-token tiles; NOTES "v31")
    tma_b: bool = False             # gluon, plain K loop, 3 stages: the block_m body's activation ring filled by TMA
                                    # (an mbarrier per slot) instead of every thread's cp.async and a CTA barrier per
                                    # K step, so an 8-warp tile's warpgroups do not run in lockstep; GEMM1 reads the
                                    # token rows copied into sorted order (kernels/row_gather.py; NOTES "v33")

    @property
    def k_loop(self) -> int:
        """wgmma_gemm.K_LOOP_*: 0 plain, 1 overlap, 2 codes two steps ahead, 3..MAX_CODE_RING a code ring that deep,
        32 + depth the ring with overlap."""
        if self.overlap:
            return 32 + self.prefetch if self.prefetch >= 3 else 1
        return self.prefetch if self.prefetch >= 2 else 0

    @property
    def ring_lookahead(self) -> int:
        """K steps of load latency a code-ring loop (prefetch >= 3) hides: its depth, capped at the activation tiles
        it keeps ahead (num_stages - 1, one fewer with overlap). A ring step commits its codes and an activation
        tile as one cp.async group, and the wait for activation tile i completes every older group, codes
        included (wgmma_gemm._wgmma_gemm_ring). 0 for the other K loops."""
        if self.prefetch < 3:
            return 0
        return min(self.prefetch, self.num_stages - 1 - int(self.overlap))

    def with_k_loop(self, **changes) -> "GemmConfig":
        """replace(self, **changes) for a change of the K loop (prefetch, overlap, ...): the three-quarter body and the
        TMA activation ring stay only where the new K loop is the plain one (with 3 stages for the ring), the only
        one that runs them."""
        cfg = replace(self, three_quarter=False, tma_b=False, **changes)
        plain = cfg.k_loop == 0
        return replace(cfg, three_quarter=self.three_quarter and plain,
                       tma_b=self.tma_b and plain and cfg.num_stages == 3)

    def with_code_ring(self, depth: int) -> "GemmConfig":
        """This tile with the weight codes `depth` K steps ahead through the shared-memory ring and the activation
        stages that let the ring load that far ahead (num_stages = depth + 1, no overlap: ring_lookahead == depth)."""
        return self.with_k_loop(prefetch=depth, num_stages=depth + 1, overlap=False)

    @property
    def grid_n_fastest(self) -> bool:
        """The grid order of the block_m-token launch (see grid_n_fastest_for)."""
        return self.grid_n_fastest_for(self.block_m)

    def grid_n_fastest_for(self, tile_m: int) -> bool:
        """The grid order of a launch of tile_m-token tiles (the block_m launch, or a tail launch's smaller tiles):
        n_fastest, or by default N-block-major from 128 tokens (wgmma_gemm._launch)."""
        return tile_m >= 128 if self.n_fastest is None else self.n_fastest

    @property
    def decode_mode(self) -> int:
        return DECODE_MODES.index(self.decode)

    def __post_init__(self):
        if self.block_n % 32:
            raise ValueError(f"block_n must be a multiple of 32, got {self.block_n}")
        if self.maxnreg is not None and (not isinstance(self.maxnreg, int) or not 24 <= self.maxnreg <= 255):
            raise ValueError(f"maxnreg must be None or an int in [24, 255], got {self.maxnreg!r}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {self.decode!r}")
        if self.block_m < 1 or self.block_m & (self.block_m - 1):
            raise ValueError(f"block_m must be a power of two, got {self.block_m}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if self.kernel == "gluon" and (not self.swap_ab or self.num_warps not in (4, 8) or self.num_stages < 2
                                       or not 8 <= self.block_m <= 256
                                       or self.decode != "asm" or self.fuse_gate_up
                                       or self.block_n not in (gluon_block_n("gemm1", self.num_warps, half=True)
                                                               + gluon_block_n("gemm2", self.num_warps, half=True))):
            raise ValueError(f"{self}: the gluon kernel needs swap_ab=True, num_warps 4 or 8, num_stages >= 2, "
                             f"8 <= block_m <= 256, decode='asm', no fuse_gate_up, and block_n in "
                             f"{GLUON_BLOCK_N} (4 warps) / {GLUON_BLOCK_N_8_WARPS} (8 warps) or a half tile's "
                             "(half_tile_block_n)")
        if self.n_blocks not in (1, 2, 4) or (self.n_blocks != 1 and self.kernel != "gluon"):
            raise ValueError(f"n_blocks={self.n_blocks!r}: must be 1, 2 or 4, and 1 unless kernel='gluon'")
        if (not isinstance(self.prefetch, int) or not 1 <= self.prefetch <= MAX_CODE_RING
                or (self.prefetch >= 2 and self.kernel != "gluon") or (self.prefetch == 2 and self.overlap)
                or (self.prefetch >= 3 and self.num_warps == 8
                    and self.block_n not in (half_tile_block_n("gemm1", 8), half_tile_block_n("gemm2", 8)))):
            raise ValueError(f"prefetch={self.prefetch!r}: must be 1 .. {MAX_CODE_RING}, and 1 unless kernel='gluon'; "
                             "2 (codes in registers) not with overlap; 3 and more (a shared-memory code ring) need "
                             "num_warps=4 or an 8-warp half tile (see half_tile_block_n)")
        if self.overlap and (self.kernel != "gluon" or self.num_stages < 3):
            raise ValueError(f"overlap=True needs kernel='gluon' and num_stages >= 3, got {self}")
        if self.tail_block_m is not None and (
                self.kernel != "gluon" or self.tail_block_m not in (16, 32, 64, 128)
                or self.tail_block_m >= self.block_m or self.tail_block_m < 4 * self.num_warps):
            raise ValueError(f"tail_block_m={self.tail_block_m}: needs kernel='gluon', a value in (16, 32, 64, 128) "
                             f"below block_m={self.block_m} and >= 4 * num_warps ({4 * self.num_warps})")
        if self.sub_block_m is not None and (
                self.kernel != "gluon" or self.sub_block_m not in (16, 32, 64, 128)
                or self.sub_block_m >= self.block_m or self.sub_block_m < 4 * self.num_warps
                or self.tail_block_m is not None):
            raise ValueError(f"sub_block_m={self.sub_block_m}: needs kernel='gluon', a value in (16, 32, 64, 128) "
                             f"below block_m={self.block_m} and >= 4 * num_warps ({4 * self.num_warps}), and no "
                             "tail_block_m")
        if self.n_fastest is not None and (self.kernel != "gluon" or not isinstance(self.n_fastest, bool)):
            raise ValueError(f"n_fastest={self.n_fastest!r}: must be None, or True / False with kernel='gluon'")
        if not isinstance(self.early, bool) or (self.early and self.kernel != "gluon"):
            raise ValueError(f"early={self.early!r}: must be True or False, and False unless kernel='gluon'")
        if not isinstance(self.three_quarter, bool) or (self.three_quarter and (
                self.kernel != "gluon" or self.k_loop != 0 or self.tail_block_m is not None
                or self.block_m // 4 < 2 * self.num_warps)):
            raise ValueError(f"three_quarter={self.three_quarter!r}: must be True or False; True needs kernel='gluon', "
                             "the plain K loop (prefetch=1, overlap=False), no tail_block_m and block_m / 4 >= 2 * "
                             f"num_warps ({2 * self.num_warps}: the activation load's rows), got {self}")
        if not isinstance(self.tma_b, bool) or (self.tma_b and (
                self.kernel != "gluon" or self.k_loop != 0 or self.num_stages != 3 or self.tail_block_m is not None)):
            raise ValueError(f"tma_b={self.tma_b!r}: must be True or False; True needs kernel='gluon', the plain K loop "
                             f"(prefetch=1, overlap=False), num_stages=3 and no tail_block_m, got {self}")
        if self.group_m is not None and (self.kernel != "gluon" or self.group_m not in (2, 4, 8)
                                         or not self.grid_n_fastest):
            raise ValueError(f"group_m={self.group_m!r}: must be None, or 2, 4 or 8 with kernel='gluon' and an "
                             "N-block-major grid (n_fastest=True, or block_m >= 128 with n_fastest None)")

    @property
    def launch_options(self) -> dict:
        """Extra Triton launch options (only the ones that are set)."""
        return {} if self.maxnreg is None else {"maxnreg": self.maxnreg}

    def as_dict(self) -> dict:
        return asdict(self)


def heuristic_config(kernel: str, num_slots: int, num_local_experts: int, soft: bool,
                     hopper: bool = False) -> GemmConfig:
    """A reasonable config from the expected slots per local expert (no tuning data needed).

    Chosen from benchmarks/sweep_gemm.py (benchmarks/NOTES.md): swap-AB with 64 weight rows per tile
    while experts see few tokens — on Hopper (`hopper`: an sm_90 GPU) the Gluon kernel with the
    smallest token tile that holds them (H100, dsv3 T=128: GEMM1 3098 -> 2251 µs), its codes through a 3-step
    shared-memory ring — and for prefill
    the 8-warp Gluon kernel on Hopper, 128x128 Triton tiles with 8 warps elsewhere.
    """
    if soft:   # the interpreter: smallest legal tiles are fastest
        return GemmConfig(block_m=16, block_n=32, swap_ab=False, num_warps=1, num_stages=1)
    per_expert = num_slots / max(num_local_experts, 1)
    if hopper and per_expert <= 64:
        # NOTES: the codes 3 K steps ahead through the shared-memory ring: against the same tile's one-step
        # prefetch, 42 H100 / H200 sweeps (4 workloads, T = 1..512, both GEMMs) median -3.6%, 3 worse by 2-5%
        # (benchmarks/NOTES.md "v15")
        # NOTES: tiles of >= 16 tokens run N-block-major (n_fastest): the tiled GEMMs alone at T = 512 / 2048 ran
        # 2-19% faster that way on all four workloads (H100, benchmarks/NOTES.md "v19"); 8-token tiles measured
        # -15..+10%
        # NOTES: waiting for activation tile i completes the cp.async group that carried the ring's codes with it,
        # so the ring hides min(3, num_stages - 1) steps: 8-token tiles take 4 stages (H100 whole calls, 3 -> 4
        # stages under the 10 bm8 picks that had 3: -0.2..-3.9%, one +0.1%; 16-token tiles mixed, NOTES "v22")
        bm = next(b for b in (8, 16, 32, 64) if per_expert <= b)
        return GemmConfig(block_m=bm, block_n=32 if kernel == "gemm1" else 64, swap_ab=True, num_warps=4,
                          num_stages=4 if bm == 8 else 3, kernel="gluon", prefetch=3,
                          n_fastest=True if bm >= 16 else None)
    if hopper:      # prefill: two warpgroups share 128-256-token activation tiles (H100 dsv3 T=8192: GEMM1 16.4 ms
        # Triton -> 10.2 ms 256-token tiles -> 8.5 ms + tails)
        # NOTES: 256-token tiles end each expert in the same launch: a 32-token body for its last few rows (instead of
        # a tail launch: H100 dsv3 T = 8192 GEMMs -2.0 / -2.3%, qwen3 -2.2 / -5.0%, NOTES "v30") and a 128 + 64-token
        # one for up to 192 (H200 v4flash T = 8192, 192 rows per expert: -7.0 / -9.8%; dsv3 with both -2.5 / -6.6%
        # against the tail launch, NOTES "v31")
        # NOTES: and 256-token tiles load their activations by TMA (tma_b: the two warpgroups out of lockstep; H200
        # T = 8192 GEMM1 -9..-13% but qwen3 +5%, GEMM2 -10..-17%, NOTES "v33")
        big = per_expert >= 160
        return GemmConfig(block_m=256 if big else 128, block_n=64 if kernel == "gemm1" else 128, swap_ab=True,
                          num_warps=8, num_stages=3 if big else 2, kernel="gluon", sub_block_m=32 if big else None,
                          three_quarter=big, tma_b=big)
    if per_expert <= 16:
        return GemmConfig(block_m=16, block_n=64, swap_ab=True, num_warps=4, num_stages=3)
    if per_expert <= 32:
        return GemmConfig(block_m=32, block_n=64, swap_ab=True, num_warps=4, num_stages=3)
    if per_expert <= 64:
        return GemmConfig(block_m=64, block_n=64, swap_ab=True, num_warps=4, num_stages=3)
    return GemmConfig(block_m=128, block_n=128, swap_ab=False, num_warps=8, num_stages=3)


def is_half_tile(cfg: GemmConfig, kernel: str) -> bool:
    """Whether `cfg` gives the gluon `kernel` a half tile (8 weight rows per warp, see half_tile_block_n)."""
    return cfg.kernel == "gluon" and cfg.block_n == half_tile_block_n(kernel, cfg.num_warps)


def is_hopper(device) -> bool:
    """True on an sm_90 GPU, where the Gluon kernels (wgmma) run."""
    import torch
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def check_gpu_config(cfg: GemmConfig, kernel: str | None = None, hopper: bool | None = None) -> None:
    """Raise ValueError for a config that could change results on a GPU, or cannot run there.

    NOTES: on Hopper the results are bitwise independent of the tile config only while every
    config uses the same MMA instruction family (wgmma). Triton falls back to `mma.sync` (which
    rounds its internal sums differently; measured: results differ) for fewer than 4 warps or an
    MMA M side (BLOCK_N with swap-AB, else BLOCK_M) that is not a multiple of 64. The Gluon kernel
    always uses wgmma; it needs an sm_90 GPU (`hopper` False: raise) and, per `kernel`, the block_n
    values of GLUON_BLOCK_N or its half tile's (half_tile_block_n).
    """
    if cfg.kernel == "gluon":
        if hopper is False:
            raise ValueError(f"{cfg}: the gluon kernel needs a Hopper GPU (sm_90); use kernel='triton' here")
        if kernel is not None and cfg.block_n not in gluon_block_n(kernel, cfg.num_warps, half=True):
            raise ValueError(f"{cfg}: the gluon {kernel} with {cfg.num_warps} warps needs block_n in "
                             f"{gluon_block_n(kernel, cfg.num_warps, half=True)}")
        if kernel is not None and cfg.prefetch >= 3 and cfg.num_warps == 8 and not is_half_tile(cfg, kernel):
            raise ValueError(f"{cfg}: a code ring (prefetch >= 3) with 8 warps needs a half tile ({kernel} block_n "
                             f"{half_tile_block_n(kernel, 8)})")
        return
    mma_m = cfg.block_n if cfg.swap_ab else cfg.block_m
    if cfg.num_warps < 4 or cfg.num_warps % 4 or mma_m % 64:
        raise ValueError(f"{cfg} is not wgmma-eligible (needs num_warps % 4 == 0 and a multiple of 64 on the MMA "
                         "M side); it would change results bitwise")


def select_config(kernel: str, num_slots: int, num_local_experts: int, soft: bool, *, num_experts: int,
                  hidden: int, intermediate: int, topk: int, device_name: str | None,
                  hopper: bool = False) -> GemmConfig:
    """The tuned config from the autotune cache when there is one, else `heuristic_config(...)`.

    kernel: "gemm1" or "gemm2"; num_slots = T * K (the layer's routed slots on this rank, T tokens);
    device_name: `torch.cuda.get_device_name()` of the device the kernel runs on (None: no cache).
    The cache is never consulted when `soft` (CPU tensors under the Triton interpreter). The lookup
    (`tmoe.autotune.cache.lookup`) picks the tuned bucket nearest to T in log2 and warns once per
    file when a file is missing or was tuned with another Triton version. Either way the result is
    bitwise the same: only tiling / warps / stages / FP4 decoder differ, never the reduction order
    (cache files are validated against `check_gpu_config`).
    """
    if not soft and device_name is not None:
        from ..autotune import cache   # lazy: tmoe.autotune.cache imports this module
        num_tokens = -(-num_slots // max(topk, 1))
        cfg = cache.lookup(kernel, device_name, num_experts, hidden, intermediate, topk, num_tokens)
        if cfg is not None:
            return cfg
    return heuristic_config(kernel, num_slots, num_local_experts, soft, hopper)
