"""Compile the Gluon decode GEMMs (kernels/wgmma_gemm.py) for sm_90 without a GPU and inspect the
SASS (run in a subprocess with TRITON_INTERPRET=0, see test_compile_sm90.py). Prints one JSON line
{config: {regs, spills, hgmma, a_reg_writes_in_flight, serialized}}.

`a_reg_writes_in_flight` counts instructions in the K loop that write a register an in-flight wgmma
reads as its A operand (sass_hazards.a_reg_hazards): ptxas protects those registers only as long as
the program uses them later (`warpgroup_mma_wait` deps), and a write corrupts results (found on an
H100: decoding the next step before waiting for the previous wgmma). `serialized`: ptxas warning C7515 (every wgmma
waited); `wgmma_waits`: the waits in the K loop (one per K step unless ptxas serialized the wgmmas silently, as it
does under a register cap too tight for the operands in flight). `epilogue_race`: see `epilogue_race` (found on an H100 with the 8-warp variant).
`compile_gluon(..., maxnreg=N)` compiles under a register cap (the capped overlap numbers of NOTES "v9").
"""
import json
import os
import re
import subprocess
import tempfile

os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

from tmoe.kernels import wgmma_gemm as wg  # noqa: E402

from sass_hazards import a_reg_hazards  # noqa: E402

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
ALIGNED = {"stride_x", "stride_act", "stride_we", "stride_wn", "stride_wse", "stride_out", "hidden", "inter",
           "k_words", "k_groups"}
# the Gluon GEMM kernels' pointer arguments as a launch types them (benchmarks/audit_picks.py compiles with them too)
GEMM_PTRS = {"gemm1": {"x_ptr": "*bf16", "w1_ptr": "*i32", "w1_sf_ptr": "*u8", "lut_ptr": "*i32",
                       "offsets_ptr": "*i32", "sorted_ptr": "*i32", "weights_ptr": "*fp32", "act_ptr": "*i16",
                       "bias_ptr": "*fp32"},
             "gemm2": {"act_ptr": "*bf16", "w2_ptr": "*i32", "w2_sf_ptr": "*u8", "lut_ptr": "*i32",
                       "offsets_ptr": "*i32", "sorted_ptr": "*i32", "weights_ptr": "*fp32", "out_ptr": "*i16",
                       "row_addr_ptr": "*i64", "bias_ptr": "*fp32"}}
# K = 2880 (gpt-oss): K/8 = 360 words is not a multiple of 16, so a launch does not specialize these
K2880_UNALIGNED = {"stride_wn", "k_words", "k_groups"}


def compile_gluon(kernel, ptr_types: dict, floats: set, const: dict, num_warps: int = 4, unaligned: set = frozenset(),
                  maxnreg: int | None = None):
    if "GDC_WAIT" in kernel.arg_names and "GDC_WAIT" not in const:     # GEMM2: a plain (not PDL) launch
        const = dict(const, GDC_WAIT=False)
    if "SUB_M" in kernel.arg_names and "SUB_M" not in const:           # no sub-tile body (GemmConfig.sub_block_m)
        const = dict(const, SUB_M=0, MMA_S=None, B_LOAD_S=None, EPI_S=None)
    if "SIGNAL" in kernel.arg_names and "SIGNAL" not in const:         # GEMM1: no row counters (early GEMM2)
        const = dict(const, SIGNAL=False, done_ptr=None)
    if "EARLY" in kernel.arg_names and "EARLY" not in const:           # GEMM2: waits for all of GEMM1
        const = dict(const, EARLY=False, done_ptr=None, done_per_row=0)
    if "TQ_M" in kernel.arg_names and "TQ_M" not in const:             # no three-quarter body
        const = dict(const, TQ_M=0, **{f"{k}_{p}": None for k in ("MMA", "B_LOAD", "EPI") for p in "HQ"})
    if "b_desc" in kernel.arg_names and "b_desc" not in const and "b_desc" not in ptr_types:  # cp.async ring
        const = dict(const, b_desc=None)
    if "ROW_TMA" in kernel.arg_names and "ROW_TMA" not in const:       # GEMM2: no TMA row epilogue
        const = dict(const, ROW_TMA=False, R_PEERS=1, **{f"pd{i}": None for i in range(8)})
    sig, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in const:
            sig[name] = "constexpr"
        elif name in ptr_types:
            sig[name] = ptr_types[name]
            if not isinstance(ptr_types[name], tuple) and not ptr_types[name].startswith("tensordesc"):
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "fp32" if name in floats else "i32"
            if name in ALIGNED - unaligned:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(GluonASTSource(kernel, sig, const, attrs), target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps, **({"maxnreg": maxnreg} if maxnreg else {})})


def _wgmma_loops(sass: str):
    """(instructions [(address, text)], the back-edge loops [(first, last address)] that hold an HGMMA). NOTES:
    addresses past 0xffff print with more hex digits (a kernel with three token bodies is ~100 KB of code)."""
    ins = [(int(m.group(1), 16), m.group(2).strip())
           for m in (re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", line) for line in sass.splitlines()) if m]
    loops = []
    for n, (addr, text) in enumerate(ins):
        target = re.search(r"BRA\s+(?:`\(\S+\)\s*)?0x([0-9a-f]+)", text)
        # NOTES: ptxas puts an mbarrier wait's retry (TRYWAIT; branch to itself; branch back) after the kernel's end:
        # its branch back is no loop (GemmConfig.tma_b)
        retry = any("SYNCS.PHASECHK" in t for _, t in ins[max(0, n - 3):n])
        if target and int(target.group(1), 16) < addr and not retry:
            loops.append((int(target.group(1), 16), addr))
    return ins, [lp for lp in loops if any("HGMMA" in t for a, t in ins if lp[0] <= a <= lp[1])]


def k_loop(sass: str, addresses: bool = False) -> list:
    ins, loops = _wgmma_loops(sass)
    lo, hi = min(loops, key=lambda lp: lp[1] - lp[0])                # the innermost loop with wgmmas: K
    return [(a, t) if addresses else t for a, t in ins if lo <= a <= hi]


def all_k_loops(sass: str) -> list:
    """Every innermost loop with wgmmas (one per token body: full, sub, three-quarter), as k_loop(addresses=True)."""
    ins, loops = _wgmma_loops(sass)
    inner = [lp for lp in loops if not any(o != lp and lp[0] <= o[0] and o[1] <= lp[1] for o in loops)]
    return [[(a, t) for a, t in ins if lo <= a <= hi] for lo, hi in inner]


def epilogue_race(ptx: str) -> bool:
    """True when, after the last wgmma wait, shared memory is written before any bar.sync: the
    epilogue's scratch aliases the activation ring that another warpgroup's wgmma may still read."""
    tail = ptx[ptx.rindex("wgmma.wait_group"):]
    first_store = tail.find("st.shared")
    barrier = tail.find("bar.sync")
    return first_store != -1 and (barrier == -1 or first_store < barrier)


def inspect(compiled, scale_word_loads: int = 0) -> dict:
    """`scale_word_loads`: the 32-bit scale loads a thread issues per K step (SCALE_WORDS: one per weight row
    it holds); every other 32-bit load in the loop counts as a narrow code load."""
    with tempfile.TemporaryDirectory() as d:
        cubin, ptx = os.path.join(d, "k.cubin"), os.path.join(d, "k.ptx")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", cubin], capture_output=True, text=True,
                              check=True).stdout
        info = subprocess.run([os.path.join(BIN, "ptxas"), "-arch=sm_90a", "-v", ptx, "-o", os.path.join(d, "o")],
                              capture_output=True, text=True).stderr
    loop = k_loop(sass, addresses=True)
    body = [t for _, t in loop]
    loops = all_k_loops(sass)
    tma_loops = [lp for lp in loops if any("UTMALDG" in t for _, t in lp)]
    regs = re.search(r"Used (\d+) registers", info)
    spills = re.search(r"(\d+) bytes spill stores", info)
    return {"regs": int(regs.group(1)) if regs else -1, "spills": int(spills.group(1)) if spills else 0,
            "hgmma": sum(t.startswith("HGMMA") for t in body), "loop_instructions": len(body),
            "wgmma_waits": sum(t.startswith("WARPGROUP.DEPBAR") for t in body),
            "barriers": sum(t.startswith("BAR.SYNC") for t in body),
            "a_reg_writes_in_flight": sum(a_reg_hazards(lp) for lp in loops),
            # GemmConfig.tma_b: K loops that load the activations by TMA, and the CTA-wide barriers in them (none:
            # the warpgroups sync by named barriers only, kernels/ptx_patch.py)
            "tma_loops": len(tma_loops),
            "tma_loop_cta_barriers": sum(t.startswith("BAR.SYNC") and t.endswith(" 0x0") for lp in tma_loops
                                         for _, t in lp),
            "k_loops": len(loops),
            "serialized": "C7515" in info,
            "narrow_code_loads": sum(re.match(r"(@!?P\d+ )?LDG\.E ", t) is not None for t in body) - scale_word_loads,
            "uniform_copies": sum(re.match(r"IMAD\.U32 R\d+, RZ, RZ, UR\d+", t) is not None for t in body),
            "code_moves": sum(re.match(r"(IMAD\.MOV\.U32 R\d+, RZ, RZ, R\d+|MOV R\d+, R\d+)$", t) is not None
                              for t in body),
            "epilogue_race": epilogue_race(compiled.asm["ptx"])}


def main() -> None:
    out = {}
    g1_ptrs, g2_ptrs = GEMM_PTRS["gemm1"], GEMM_PTRS["gemm2"]
    # (block_m, block_n, stages, bias, persistent / row_addr, quad, warps, K % 128 != 0 like gpt-oss's 2880);
    # scale rows loaded as 32-bit words except for bm16 (GEMM1) / bm32 (GEMM2): byte loads (' bytes');
    # the quad variants read the tiled layout (weight_layout.to_tiled, the default on Hopper) with the "arith"
    # word bits (QUAD=2, GEMM1) / the "signed" ones (QUAD=1, GEMM2 and the overlap variants)
    for bm, bn, stages, bias, persistent, quad, warps, partial in (
            (8, 32, 3, False, False, False, 4, False), (16, 64, 2, True, False, False, 4, False),
            (64, 32, 4, False, True, False, 4, False), (8, 32, 3, False, False, True, 4, False),
            (128, 64, 2, False, True, True, 8, False), (8, 32, 3, True, False, False, 4, True),
            (8, 32, 3, True, False, True, 4, True), (256, 64, 2, True, False, True, 8, True)):
        const = dict(TOPK=8, BLOCK_M=bm, BLOCK_N=bn, E_PAD=256, HAS_CLAMP=True, FAST_MATH=True, ACTIVATION=1,
                     HAS_BIAS=bias, STAGES=stages, PERSISTENT=persistent, QUAD=2 * quad, PARTIAL_K=partial,
                     N_FASTEST=bm >= 128, SPLIT=wg.SPLIT_FULL.value if warps == 8 else 0, FULL_M=bm, TAIL_M=32,
                     SCALE_WORDS=bm != 16, TILED=quad, K_LOOP=0, N_BLOCKS=1, **wg._layouts(bm, warps))
        name = (f"gemm1 bm{bm} bn{bn} s{stages}{' w8' if warps == 8 else ''}{' k2880' if partial else ''}"
                f"{'' if const['SCALE_WORDS'] else ' bytes'}")
        out[name + (" quad" if quad else "")] = inspect(compile_gluon(
            wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, const, warps, K2880_UNALIGNED if partial else set()),
            2 * bn // (8 * warps) if const["SCALE_WORDS"] else 0)
    for bm, bn, stages, bias, row_addr, quad, warps, partial in (
            (8, 64, 3, False, False, False, 4, False), (32, 128, 2, True, True, False, 4, False),
            (8, 64, 3, False, False, True, 4, False), (8, 128, 3, False, False, True, 4, False),
            (128, 128, 3, True, False, True, 8, False),
            (8, 64, 3, True, False, False, 4, True), (8, 64, 3, True, False, True, 4, True)):
        const = dict(BLOCK_M=bm, BLOCK_N=bn, E_PAD=256, HAS_BIAS=bias, ROW_ADDR=row_addr, STAGES=stages,
                     QUAD=quad, PARTIAL_K=partial, PERSISTENT=False, N_FASTEST=bm >= 128,
                     SPLIT=wg.SPLIT_TAIL.value if warps == 8 else 0, FULL_M=256, TAIL_M=bm, SCALE_WORDS=bm != 32,
                     TILED=quad, K_LOOP=0, N_BLOCKS=1,
                     **wg._layouts(bm, warps))
        name = (f"gemm2 bm{bm} bn{bn} s{stages}{' w8' if warps == 8 else ''}{' k2880' if partial else ''}"
                f"{'' if const['SCALE_WORDS'] else ' bytes'}")
        out[name + (" quad" if quad else "")] = inspect(compile_gluon(
            wg._gemm2_wgmma_kernel, g2_ptrs, set(), const, warps, K2880_UNALIGNED if partial else set()),
            bn // (8 * warps) if const["SCALE_WORDS"] else 0)
    # K_LOOP = 1, overlap (decode while the previous wgmma runs, a 2x unrolled loop with two A operands): the hazard check
    # walks the loop twice with the in-flight wgmma groups of each DEPBAR
    for bm, bn, stages, warps, partial in ((128, 128, 4, 8, False), (16, 64, 3, 4, True)):
        const = dict(BLOCK_M=bm, BLOCK_N=bn, E_PAD=256, HAS_BIAS=True, ROW_ADDR=False, STAGES=stages, QUAD=True,
                     PARTIAL_K=partial, PERSISTENT=False, N_FASTEST=bm >= 128, SPLIT=0, FULL_M=256, TAIL_M=bm,
                     SCALE_WORDS=True, TILED=True, K_LOOP=1, N_BLOCKS=1, **wg._layouts(bm, warps))
        name = f"gemm2 bm{bm} bn{bn} s{stages}{' w8' if warps == 8 else ''}{' k2880' if partial else ''} quad overlap"
        out[name] = inspect(compile_gluon(wg._gemm2_wgmma_kernel, g2_ptrs, set(), const, warps,
                                          K2880_UNALIGNED if partial else set()), 2 * bn // (8 * warps))
    # N_BLOCKS = 2: two channel blocks per program (GemmConfig.n_blocks), the arith word bits, tiled
    for kernel, ptrs, floats, bn, stages, extra in (
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 32, 4,
             dict(TOPK=8, HAS_CLAMP=True, FAST_MATH=True, ACTIVATION=1)),
            (wg._gemm2_wgmma_kernel, g2_ptrs, set(), 128, 3, dict(ROW_ADDR=False))):
        const = dict(BLOCK_M=8, BLOCK_N=bn, E_PAD=256, HAS_BIAS=False, STAGES=stages, QUAD=2, PARTIAL_K=False,
                     PERSISTENT=False, N_FASTEST=False, SPLIT=0, FULL_M=8, TAIL_M=8, SCALE_WORDS=True, TILED=True,
                     K_LOOP=0, N_BLOCKS=2, **extra, **wg._layouts(8, 4))
        name = f"{'gemm1' if 'TOPK' in extra else 'gemm2'} bm8 bn{bn} s{stages} quad nb2"
        out[name] = inspect(compile_gluon(kernel, ptrs, floats, const, 4),
                            (2 if 'TOPK' in extra else 1) * bn // 32)
    # K_LOOP = 2: codes two K steps ahead, a two-step loop body without register copies (GemmConfig.prefetch)
    for kernel, ptrs, floats, bn, partial, extra in (
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 32, False, dict(TOPK=8, HAS_CLAMP=True,
                                                                                FAST_MATH=True, ACTIVATION=1)),
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 32, True, dict(TOPK=8, HAS_CLAMP=True,
                                                                               FAST_MATH=True, ACTIVATION=1)),
            (wg._gemm2_wgmma_kernel, g2_ptrs, set(), 64, False, dict(ROW_ADDR=False))):
        const = dict(BLOCK_M=8, BLOCK_N=bn, E_PAD=256, HAS_BIAS=partial, STAGES=4, QUAD=2, PARTIAL_K=partial,
                     PERSISTENT=False, N_FASTEST=False, SPLIT=0, FULL_M=8, TAIL_M=8, SCALE_WORDS=True, TILED=True,
                     K_LOOP=2, N_BLOCKS=1, **extra, **wg._layouts(8, 4))
        name = f"{'gemm1' if 'TOPK' in extra else 'gemm2'} bm8 bn{bn} s4{' k2880' if partial else ''} quad ahead2"
        out[name] = inspect(compile_gluon(kernel, ptrs, floats, const, 4, K2880_UNALIGNED if partial else set()),
                            2 * (2 if 'TOPK' in extra else 1) * bn // 32)     # two steps' scale words
    # K_LOOP >= 3: the codes and scale words K_LOOP steps ahead through a shared-memory ring (GemmConfig.prefetch >= 3)
    for kernel, ptrs, floats, bn, partial, depth, extra in (
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 32, False, 6, dict(TOPK=8, HAS_CLAMP=True,
                                                                                   FAST_MATH=True, ACTIVATION=1)),
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 32, True, 4, dict(TOPK=8, HAS_CLAMP=True,
                                                                                  FAST_MATH=True, ACTIVATION=1)),
            (wg._gemm2_wgmma_kernel, g2_ptrs, set(), 128, False, 4, dict(ROW_ADDR=False))):
        const = dict(BLOCK_M=8, BLOCK_N=bn, E_PAD=256, HAS_BIAS=partial, STAGES=3, QUAD=2, PARTIAL_K=partial,
                     PERSISTENT=False, N_FASTEST=False, SPLIT=0, FULL_M=8, TAIL_M=8, SCALE_WORDS=True, TILED=True,
                     K_LOOP=depth, N_BLOCKS=1, **extra, **wg._layouts(8, 4))
        name = f"{'gemm1' if 'TOPK' in extra else 'gemm2'} bm8 bn{bn} s3{' k2880' if partial else ''} quad ring{depth}"
        compiled = compile_gluon(kernel, ptrs, floats, const, 4, K2880_UNALIGNED if partial else set())
        out[name] = dict(inspect(compiled, 0), shared=compiled.metadata.shared)
        # the ring's loop with overlap (K_LOOP_RING_OVERLAP + depth, two A operands; the hazard check walks the
        # two-step body); and under an 80-register cap, where ptxas keeps no spills by waiting for every wgmma
        for cap in (None, 80):
            overlap = compile_gluon(kernel, ptrs, floats, dict(const, K_LOOP=32 + depth, STAGES=4), 4,
                                    K2880_UNALIGNED if partial else set(), maxnreg=cap)
            out[name + f" overlap{cap or ''}"] = dict(inspect(overlap, 0), shared=overlap.metadata.shared)
        if not partial:
            # GEMM2 / GEMM1 (GDC_EARLY) as a programmatic dependent launch: griddepcontrol.wait after the code ring's
            # prologue, the dependents released only after it (kernels/pdl.py)
            flag = dict(GDC=wg.GDC_EARLY.value) if "TOPK" in extra else dict(GDC_WAIT=True)
            pdl = compile_gluon(kernel, ptrs, floats, dict(const, **flag), 4)
            ptx = pdl.asm["ptx"]
            out[name + " pdl"] = dict(inspect(pdl, 0), shared=pdl.metadata.shared,
                                      gdc_waits=ptx.count("griddepcontrol.wait"),
                                      wait_after_codes=ptx.index("cp.async") < ptx.index("griddepcontrol.wait"),
                                      trigger_after_wait=ptx.index("griddepcontrol.wait")
                                      < ptx.index("griddepcontrol.launch_dependents"))
            # early GEMM2 (RoutingPlan.expert_rows_done): GEMM1 adds its rows to the expert's counter (release) after
            # each channel block; GEMM2 polls its expert's counter (acquire) after the codes' prologue instead of
            # waiting for all of GEMM1, and waits for GEMM1 before it exits
            gemm1 = "TOPK" in extra
            early = compile_gluon(kernel, dict(ptrs, done_ptr="*i32"), floats,
                                  dict(const, **flag, **(dict(SIGNAL=True) if gemm1 else dict(EARLY=True))), 4)
            ptx = early.asm["ptx"]
            sync = "atom.global.gpu.release.add" if gemm1 else "ld.global.gpu.acquire"
            out[name + " early"] = dict(inspect(early, 0), shared=early.metadata.shared, sync_ops=ptx.count(sync),
                                        gdc_waits=ptx.count("griddepcontrol.wait"),
                                        poll_after_codes=sync not in ptx or ptx.index("cp.async") < ptx.index(sync))
    # GEMM2 storing its rows into the ranks' `home` by TMA (the fused symm_mem return, tma_copy.store_tile_rows)
    from tmoe.dispatch import tma_copy
    from triton.runtime.jit import mangle_type
    # (the 8x64 8-warp one is a half tile, configs.half_tile_block_n: the H100's qwen3 GEMM2 pick at one token, which
    # the symm_mem transport's fused return would run with this epilogue)
    for bm, bn, stages, warps, ranks in ((8, 128, 3, 4, 4), (128, 128, 3, 8, 8), (8, 64, 4, 8, 4)):
        homes = [torch.zeros(64, 7168, dtype=torch.int16) for _ in range(ranks)]
        descs = tma_copy.PeerRows(None, None, homes).kernel_args(bn)
        const = dict(BLOCK_M=bm, BLOCK_N=bn, E_PAD=256, HAS_BIAS=False, ROW_ADDR=False, ROW_TMA=True, R_PEERS=ranks,
                     STAGES=stages, QUAD=1, PARTIAL_K=False, PERSISTENT=False, N_FASTEST=bm >= 128, SPLIT=0,
                     FULL_M=bm, TAIL_M=bm, SCALE_WORDS=True, TILED=True, K_LOOP=0, N_BLOCKS=1,
                     **wg._layouts(bm, warps))
        compiled = compile_gluon(wg._gemm2_wgmma_kernel,
                                 dict(g2_ptrs, **{f"pd{i}": mangle_type(d) for i, d in enumerate(descs)}), set(), const,
                                 warps)
        ptx = compiled.asm["ptx"]
        out[f"gemm2 bm{bm} bn{bn} s{stages}{' w8' if warps == 8 else ''} quad tma"] = dict(
            inspect(compiled, bn // (8 * warps)), shared=compiled.metadata.shared,
            tma_stores=ptx.count("cp.async.bulk.tensor.2d.global.shared"),
            store_waits=ptx.count("cp.async.bulk.wait_group"))
    # a tile with a second, narrower token body (GemmConfig.sub_block_m): both bodies' K loops in one kernel
    for kernel, ptrs, floats, bm, bn, warps, sub, k_loop in (
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 128, 64, 8, 64, 0),
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 64, 32, 4, 32, 3),
            (wg._gemm2_wgmma_kernel, g2_ptrs, set(), 128, 128, 8, 64, 0)):
        extra = dict(TOPK=8, HAS_CLAMP=True, FAST_MATH=True, ACTIVATION=1) if "TOPK" in kernel.arg_names else dict(
            ROW_ADDR=False)
        const = dict(BLOCK_M=bm, BLOCK_N=bn, E_PAD=256, HAS_BIAS=False, STAGES=3, QUAD=2 if "TOPK" in extra else 1,
                     PARTIAL_K=False, PERSISTENT=False, N_FASTEST=bm >= 128, SPLIT=0, FULL_M=bm, TAIL_M=bm,
                     SCALE_WORDS=True, TILED=True, K_LOOP=k_loop, N_BLOCKS=1, **extra, **wg._layouts(bm, warps),
                     SUB_M=sub, **{f"{k}_S": v for k, v in wg._layouts(sub, warps).items()})
        compiled = compile_gluon(kernel, ptrs, floats, const, warps)
        name = (f"{'gemm1' if 'TOPK' in extra else 'gemm2'} bm{bm} bn{bn} s3{' w8' if warps == 8 else ''} quad sub{sub}"
                + {0: "", 1: " overlap", 3: " ring3"}[k_loop])
        scale_word_loads = 0 if k_loop >= 3 else (2 if "TOPK" in extra else 1) * bn // (8 * warps)
        out[name] = dict(inspect(compiled, scale_word_loads), shared=compiled.metadata.shared,
                         total_hgmma=compiled.asm["sass"].count("HGMMA."))
    # GemmConfig.three_quarter: the full body, the sub body and the two-part body's K loop in one kernel
    for kernel, ptrs, floats, bm, bn, warps, sub in (
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 256, 64, 8, 0),
            (wg._gemm2_wgmma_kernel, g2_ptrs, set(), 256, 128, 8, 128),
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 64, 32, 4, 16),
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 64, 64, 8, 32)):
        extra = dict(TOPK=8, HAS_CLAMP=True, FAST_MATH=True, ACTIVATION=1) if "TOPK" in kernel.arg_names else dict(
            ROW_ADDR=False)
        subs = dict(SUB_M=sub, **{f"{k}_S": v for k, v in wg._layouts(sub, warps).items()}) if sub else {}
        const = dict(BLOCK_M=bm, BLOCK_N=bn, E_PAD=256, HAS_BIAS=False, STAGES=2, QUAD=2 if "TOPK" in extra else 1,
                     PARTIAL_K=False, PERSISTENT=False, N_FASTEST=bm >= 128, SPLIT=0, FULL_M=bm, TAIL_M=bm,
                     SCALE_WORDS=True, TILED=True, K_LOOP=0, N_BLOCKS=1, **extra, **wg._layouts(bm, warps), **subs,
                     TQ_M=3 * bm // 4, **{f"{k}_H": v for k, v in wg._layouts(bm // 2, warps).items()},
                     **{f"{k}_Q": v for k, v in wg._layouts(bm // 4, warps).items()})
        compiled = compile_gluon(kernel, ptrs, floats, const, warps)
        name = (f"{'gemm1' if 'TOPK' in extra else 'gemm2'} bm{bm} bn{bn} s2{' w8' if warps == 8 else ''} quad"
                + (f" sub{sub}" if sub else "") + " tq")
        out[name] = dict(inspect(compiled, (2 if "TOPK" in extra else 1) * bn // (8 * warps)),
                         shared=compiled.metadata.shared, total_hgmma=compiled.asm["sass"].count("HGMMA."))
    # GemmConfig.tma_b: the block_m body's activation ring by TMA (GEMM1 from the sorted rows, GEMM2 from act) next to
    # the cp.async bodies (sub, three-quarter); K = 2880 with its partial last step
    from triton.runtime.jit import mangle_type
    for kernel, ptrs, floats, bm, bn, warps, sub, tq, k2880 in (
            (wg._gemm1_wgmma_kernel, g1_ptrs, {"clamp", "alpha"}, 256, 64, 8, 32, True, False),
            (wg._gemm2_wgmma_kernel, g2_ptrs, set(), 256, 128, 8, 0, False, True),
            (wg._gemm2_wgmma_kernel, g2_ptrs, set(), 64, 64, 4, 0, False, False)):
        gemm1 = "TOPK" in kernel.arg_names
        extra = dict(TOPK=8, HAS_CLAMP=True, FAST_MATH=True, ACTIVATION=1) if gemm1 else dict(ROW_ADDR=False)
        subs = dict(SUB_M=sub, **{f"{k}_S": v for k, v in wg._layouts(sub, warps).items()}) if sub else {}
        tqs = dict(TQ_M=3 * bm // 4, **{f"{k}_H": v for k, v in wg._layouts(bm // 2, warps).items()},
                   **{f"{k}_Q": v for k, v in wg._layouts(bm // 4, warps).items()}) if tq else {}
        desc = wg._rows_descriptor(torch.empty(64, 2880 if k2880 else 7168, dtype=torch.int16), bm)
        const = dict(BLOCK_M=bm, BLOCK_N=bn, E_PAD=256, HAS_BIAS=False, STAGES=3, QUAD=2 if gemm1 else 1,
                     PARTIAL_K=k2880, PERSISTENT=False, N_FASTEST=bm >= 128, SPLIT=0, FULL_M=bm, TAIL_M=bm,
                     SCALE_WORDS=True, TILED=True, K_LOOP=0, N_BLOCKS=1, **extra, **wg._layouts(bm, warps), **subs, **tqs)
        compiled = compile_gluon(kernel, dict(ptrs, b_desc=mangle_type(desc)), floats, const, warps,
                                 K2880_UNALIGNED if k2880 else set())
        name = (f"{'gemm1' if gemm1 else 'gemm2'} bm{bm} bn{bn} s3{' w8' if warps == 8 else ''}"
                f"{' k2880' if k2880 else ''} quad{f' sub{sub}' if sub else ''}{' tq' if tq else ''} tma_b")
        out[name] = dict(inspect(compiled, (2 if gemm1 else 1) * bn // (8 * warps)),
                         shared=compiled.metadata.shared, total_hgmma=compiled.asm["sass"].count("HGMMA."))
    # GemmConfig.group_m: N-block-major in groups of tiles (_tile_pids, N_FASTEST = group): the program ids only
    for group in (1, 4):
        const = dict(BLOCK_M=64, BLOCK_N=128, E_PAD=256, HAS_BIAS=False, ROW_ADDR=False, STAGES=3, QUAD=1,
                     PARTIAL_K=False, PERSISTENT=False, N_FASTEST=group, SPLIT=0, FULL_M=64, TAIL_M=64,
                     SCALE_WORDS=True, TILED=True, K_LOOP=0, N_BLOCKS=1, **wg._layouts(64, 8))
        out[f"gemm2 bm64 bn128 s3 w8 quad group{group}"] = inspect(
            compile_gluon(wg._gemm2_wgmma_kernel, g2_ptrs, set(), const, 8), 128 // 64)
    # half tiles (configs.half_tile_block_n: 8 weight rows per warp, the wgmma's other 8 rows zeros): GEMM2 4 warps,
    # GEMM1 / GEMM2 8 warps (also through the code ring), each K loop shape once
    g1_extra = dict(TOPK=8, HAS_CLAMP=True, FAST_MATH=True, ACTIVATION=1)
    for kernel, bm, bn, warps, stages, k_loop, partial in (
            ("gemm2", 8, 32, 4, 5, 4, False), ("gemm2", 8, 32, 4, 3, 0, True), ("gemm2", 8, 64, 8, 4, 2, False),
            ("gemm1", 8, 32, 8, 5, 4, False), ("gemm1", 8, 32, 8, 5, 4, True), ("gemm1", 16, 32, 8, 3, 1, True)):
        gemm1 = kernel == "gemm1"
        const = dict(BLOCK_M=bm, BLOCK_N=bn, E_PAD=256, HAS_BIAS=partial, STAGES=stages, QUAD=2, PARTIAL_K=partial,
                     PERSISTENT=False, N_FASTEST=False, SPLIT=0, FULL_M=bm, TAIL_M=bm, SCALE_WORDS=True, TILED=True,
                     K_LOOP=k_loop, N_BLOCKS=1, **(g1_extra if gemm1 else dict(ROW_ADDR=False)),
                     **wg._layouts(bm, warps))
        compiled = compile_gluon(wg._gemm1_wgmma_kernel if gemm1 else wg._gemm2_wgmma_kernel, GEMM_PTRS[kernel],
                                 {"clamp", "alpha"} if gemm1 else set(), const, warps,
                                 K2880_UNALIGNED if partial else set())
        loop = {0: "", 1: " overlap", 2: " ahead2"}.get(k_loop, f" ring{k_loop}")
        name = (f"{kernel} bm{bm} bn{bn} s{stages}{' w8' if warps == 8 else ''}{' k2880' if partial else ''} "
                f"quad{loop} half")
        rows = (2 if gemm1 else 1) * bn
        steps = 2 if k_loop in (1, 2) else 1        # K steps per loop iteration: one scale word per row and step
        out[name] = dict(inspect(compiled, 0 if k_loop >= 3 else steps * rows // (8 * warps)),
                         shared=compiled.metadata.shared)
    out["triton quad b-operand"] = triton_quad_b_operand()
    print(json.dumps(out))


def triton_quad_b_operand() -> dict:
    """The Triton GEMM1 with quad weights as the MMA's B operand (128x128, swap_ab=False, 8 warps, qwen3's
    H = 2048), row-major and tiled: compiles for sm_90 as launched (the scale row stride unspecialized)."""
    from tmoe.kernels import grouped_gemm as gg
    kernel = gg._gemm1_swiglu_kernel
    ptrs = {"x_ptr": "*i16", "w1_ptr": "*u8", "w1_sf_ptr": "*u8", "offsets_ptr": "*i32", "sorted_ptr": "*i32",
            "weights_ptr": "*fp32", "act_ptr": "*i16", "bias_ptr": "*fp32"}
    return {"compiles": [_compile_triton_b_operand(kernel, ptrs, tiled) for tiled in (False, True)],
            "unspecialized": sorted(kernel.do_not_specialize)}


def _compile_triton_b_operand(kernel, ptrs: dict, tiled: bool) -> bool:
    from triton.compiler import ASTSource
    const = dict(TOPK=8, BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, E_PAD=128, SWAP_AB=False, HAS_CLAMP=False,
                 FAST_MATH=True, ACTIVATION=0, HAS_BIAS=False, SOFT=False, DECODE=1, FUSE_GATE_UP=False, QUAD=True,
                 TILED=tiled, PERSISTENT=False)
    sig, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in const:
            sig[name] = "constexpr"
            continue
        sig[name] = ptrs.get(name, "fp32" if name in ("clamp", "alpha") else "i32")
        if name in ptrs or (name.startswith("stride") or name in ("hidden", "inter")) \
                and name not in kernel.do_not_specialize:
            attrs[(i,)] = [["tt.divisibility", 16]]
    try:
        triton.compile(ASTSource(kernel, sig, const, attrs), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 8, "num_stages": 3})
        return True
    except Exception:   # noqa: BLE001 - reported, the test fails on it
        return False


if __name__ == "__main__":
    main()
