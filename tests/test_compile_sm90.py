"""The symm_mem transport's kernels compile for Hopper (sm_90) — checked on any machine, no GPU.

Triton compiles ahead of time for a GPUTarget with its bundled ptxas; the interpreter used by the
other CPU tests never lowers to PTX, so a lowering failure (e.g. Triton 3.6's scan lowering on a
[ROWS, 2] tile, first met on 2 x H200) would otherwise only show up on a GPU. Also checks that the
NVLink copies use 16-byte stores and that the barriers use system-scope release / acquire atomics.
"""
import json
import os
import subprocess
import sys


def test_symm_mem_kernels_compile_for_sm90():
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sm90_compile_worker.py")
    env = dict(os.environ, TRITON_INTERPRET="0")
    run = subprocess.run([sys.executable, worker, "2", "4", "8"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result.pop("gemm2_row_addr")["wgmma"] > 0, "GEMM2 with the fused-return epilogue must still use wgmma"
    for world, kernels in result.items():
        for name in ("push", "return"):
            c = kernels[name]
            assert c["st_v4"] >= 8, f"R={world} {name}: NVLink copies should use 16-byte stores ({c})"
            assert c["release_sys"] >= 1 and c["acquire"] >= 1, f"R={world} {name}: barrier atomics ({c})"


def test_a_reg_hazard_check_finds_writes_to_in_flight_operands():
    """The SASS checker itself: a write to an A register of a wgmma group that is still in flight (also
    across the loop's back edge) counts, a write after the DEPBAR that retired that group does not."""
    from sass_hazards import a_reg_hazards
    hgmma = "HGMMA.64x8x16.F32.BF16 R24, R{}, gdesc[UR4], R24, gsb0"
    # the bug found on an H100: the next step decoded (R40 written) before waiting for the previous wgmma
    assert a_reg_hazards(["PRMT R40, R1, 0x5140, R2", "WARPGROUP.DEPBAR.LE gsb0, 0x0", hgmma.format(40)]) == 1
    assert a_reg_hazards(["WARPGROUP.DEPBAR.LE gsb0, 0x0", "PRMT R40, R1, 0x5140, R2", hgmma.format(40)]) == 0
    # overlap: two operands, each rewritten only after DEPBAR.LE 1 retired its group; a 128-bit load into
    # the other operand while its group runs is a hazard
    overlap = ["PRMT R40, R1, 0x5140, R2", hgmma.format(40), "WARPGROUP.DEPBAR.LE gsb0, 0x1",
               "PRMT R60, R1, 0x5140, R2", hgmma.format(60), "WARPGROUP.DEPBAR.LE gsb0, 0x1"]
    assert a_reg_hazards(overlap) == 0
    assert a_reg_hazards(overlap[:3] + ["LDG.E.128 R60, desc[UR4][R2.64]"] + overlap[3:]) == 0
    assert a_reg_hazards(["LDG.E.128 R58, desc[UR4][R2.64]"] + overlap) == 1       # R60's group from the last walk
    assert a_reg_hazards(overlap[:2] + ["IMAD.MOV.U32 R41, RZ, RZ, R3"] + overlap[2:]) == 1
    # a loop with one copy of its step per branch (benchmarks/experiments/parity_ring.patch): the wait at the top
    # covers both copies; walked in address order, the second copy's decode would look like a write behind the first
    # copy's wgmma
    branches = [(0x00, "WARPGROUP.DEPBAR.LE gsb0, 0x0"), (0x10, "@!P5 BRA 0x50"), (0x20, "PRMT R40, R1, 0x5140, R2"),
                (0x30, hgmma.format(40)), (0x40, "BRA 0x70"), (0x50, "PRMT R40, R1, 0x5140, R2"),
                (0x60, hgmma.format(40)), (0x70, "@P3 BRA 0x0")]
    assert a_reg_hazards(branches) == 0 and a_reg_hazards([t for _, t in branches]) == 1
    assert a_reg_hazards([(0x00, "NOP")] + branches[1:]) == 2        # no wait: both copies write in-flight registers


def test_gluon_gemms_compile_for_sm90_without_register_hazards():
    """The Gluon decode GEMMs compile for sm_90 (tile configs incl. bias / fused-return / persistent
    variants) with wgmmas in the K loop, no spills, no ptxas wgmma serialization, and no write to an
    in-flight wgmma's register A operand (ptxas does not protect it; see gluon_compile_worker.py)."""
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gluon_compile_worker.py")
    run = subprocess.run([sys.executable, worker], capture_output=True, text=True,
                         env=dict(os.environ, TRITON_INTERPRET="0"), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    triton_b = result.pop("triton quad b-operand")
    assert triton_b == {"compiles": [True, True], "unspecialized": ["stride_wsn"]}, triton_b
    assert len(result) == 56
    for name in ("gemm1 bm128 bn64 s3 w8 quad sub64", "gemm1 bm64 bn32 s3 quad sub32 ring3",
                 "gemm2 bm128 bn128 s3 w8 quad sub64"):
        # sub_block_m: both token bodies' K loops (twice the wgmmas of one), the activation rings sharing memory
        assert result[name]["total_hgmma"] >= 2 * result[name]["hgmma"], (name, result[name])
    for name in ("gemm1 bm256 bn64 s2 w8 quad tq", "gemm2 bm256 bn128 s2 w8 quad sub128 tq", "gemm1 bm64 bn32 s2 quad sub16 tq",
                 "gemm1 bm64 bn64 s2 w8 quad sub32 tq"):
        # three_quarter: the two-part body's K loop (both parts' wgmmas per step) next to the full (and sub) body's
        assert result[name]["k_loops"] == (3 if "sub" in name else 2), (name, result[name])
    for name in ("gemm1 bm256 bn64 s3 w8 quad sub32 tq tma_b", "gemm2 bm256 bn128 s3 w8 k2880 quad tma_b",
                 "gemm2 bm64 bn64 s3 quad tma_b"):
        # tma_b: the block_m body's K loop loads its activations by TMA, with no CTA-wide barrier in it (the sub and
        # three-quarter bodies keep their cp.async rings)
        c = result[name]
        assert c["tma_loops"] == 1 and c["tma_loop_cta_barriers"] == 0, (name, c)
    for name in ("gemm2 bm8 bn128 s3 quad tma", "gemm2 bm128 bn128 s3 w8 quad tma", "gemm2 bm8 bn64 s4 w8 quad tma"):
        # one TMA store per rank's branch, the wait before the next tile's rows and before the kernel exits
        assert result[name]["tma_stores"] >= 4 and result[name]["store_waits"] >= 2, (name, result[name])
    # 128 weight rows per warpgroup: <= 168 registers keeps 3 CTAs (4 warps) per SM; the loop's row-only
    # masks would let ptxas hoist per-row addresses (174+ registers, 2 CTAs: qwen3 decode measured +3%)
    assert result["gemm2 bm8 bn128 s3 quad"]["regs"] <= 168, result["gemm2 bm8 bn128 s3 quad"]
    serialized = {n: result.pop(n) for n in list(result) if n.endswith("overlap80")}
    for name, c in serialized.items():
        # the overlapped ring under a cap too tight for two A operands: ptxas waits for every wgmma, without a
        # warning (what `wgmma_waits` below guards against; the sweeps' register caps must not land there)
        assert c["wgmma_waits"] == c["hgmma"], (name, c)
    for name, c in result.items():
        assert c["hgmma"] >= 8 and c["spills"] == 0 and not c["serialized"], f"{name}: {c}"
        assert c["a_reg_writes_in_flight"] == 0, f"{name}: registers of an in-flight wgmma are overwritten ({c})"
        assert not c["epilogue_race"], f"{name}: the epilogue writes shared memory a wgmma may still read ({c})"
        # K = 2880 is not specialized as a multiple of 16 words: without the kernel's hint each lane's 16
        # code bytes load as four 32-bit loads
        assert c["narrow_code_loads"] == 0, f"{name}: code loads are not 128-bit ({c})"
        # the lookup words loaded per thread stay in registers: as immediates ptxas copied them from a
        # uniform register before every lookup (34 of 324 loop instructions, gpt-oss decode tile)
        steps = 2 if "ahead2" in name or "overlap" in name else 1       # K steps per loop iteration
        # (the TMA ring's loop also moves its step's slot / phase / barrier id / TMA coordinates: up to 8)
        assert c["uniform_copies"] <= (8 if "tma_b" in name else 4) * steps, \
            f"{name}: per-step uniform -> vector register copies ({c})"
        assert c["wgmma_waits"] == steps, f"{name}: wgmmas waited for one by one ({c})"
    for name in ("gemm1 bm8 bn32 s4 quad ahead2", "gemm1 bm8 bn32 s4 k2880 quad ahead2", "gemm2 bm8 bn64 s4 quad ahead2"):
        # two steps per iteration, no register copies of the prefetched codes (their copy waits for the load)
        assert result[name]["hgmma"] == 16 and result[name]["code_moves"] == 0, (name, result[name])
    for name in ("gemm1 bm8 bn32 s3 quad ring6", "gemm1 bm8 bn32 s3 k2880 quad ring4", "gemm2 bm8 bn128 s3 quad ring4"):
        # the code ring: no global code or scale loads left in the loop (cp.async 16-byte vectors per lane and row,
        # read back with LDS), and the rings' shared memory as sized: DEPTH x rows x 64 B codes + rows x 4 B scales
        c = result[name]
        rows, depth = (64 if "gemm1" in name else 128), int(name[-1])
        assert c["hgmma"] == 8 * rows // 64 and c["narrow_code_loads"] == 0, (name, c)
        assert c["shared"] >= depth * rows * 68 + 3 * 8 * 128 * 2, (name, c)
    for name in ("gemm1 bm8 bn32 s3 quad ring6", "gemm1 bm8 bn32 s3 k2880 quad ring4", "gemm2 bm8 bn128 s3 quad ring4"):
        # the ring with overlap: a two-step body (two A operands: the hazard check above covers them), one wgmma wait
        # per step (checked above); 64 weight rows keep 3 CTAs per SM (<= 168 registers)
        ovl, ring = result[name + " overlap"], result[name]
        assert ovl["hgmma"] == 2 * ring["hgmma"] and ovl["regs"] <= (168 if "gemm1" in name else 255), (name, ovl)
        assert ovl["loop_instructions"] <= 2 * ring["loop_instructions"] + 40, (name, ovl, ring)
    # GEMM2 (and GEMM1 two kernels after routing) as a programmatic dependent launch: it waits for the previous kernel
    # after issuing its first weight codes, releases its own dependents only after that wait, and every program waits
    # once more before exiting (a program without a tile too); same loop otherwise
    for name in ("gemm2 bm8 bn128 s3 quad ring4", "gemm1 bm8 bn32 s3 quad ring6"):
        pdl, plain = result[name + " pdl"], result[name]
        assert pdl["gdc_waits"] == 2 and pdl["wait_after_codes"] and pdl["trigger_after_wait"], (name, pdl)
        assert pdl["loop_instructions"] == plain["loop_instructions"] and pdl["regs"] <= plain["regs"] + 8, (pdl, plain)
    # early GEMM2: GEMM1 releases its rows with one atomic per channel block, GEMM2 polls its expert's counter (two
    # acquire loads: before and in the poll loop) after issuing its first codes and keeps the exit wait; the same K
    # loops up to ptxas' scheduling (+-8 instructions)
    signal, poll = result["gemm1 bm8 bn32 s3 quad ring6 early"], result["gemm2 bm8 bn128 s3 quad ring4 early"]
    assert signal["sync_ops"] == 1 and poll["sync_ops"] == 2 and poll["poll_after_codes"], (signal, poll)
    assert poll["gdc_waits"] == 2, poll         # the fallback after SPIN_LIMIT polls, and before exiting
    for name in ("gemm2 bm8 bn128 s3 quad ring4", "gemm1 bm8 bn32 s3 quad ring6"):
        assert abs(result[name + " early"]["loop_instructions"] - result[name]["loop_instructions"]) <= 8, name
    # grouped N-block-major order (GemmConfig.group_m): a few program-id instructions before the tile, the same loop
    grouped, plain = result["gemm2 bm64 bn128 s3 w8 quad group4"], result["gemm2 bm64 bn128 s3 w8 quad group1"]
    assert grouped["loop_instructions"] == plain["loop_instructions"] and grouped["regs"] <= plain["regs"] + 4, (
        grouped, plain)
    # half tiles: a warpgroup's 8 wgmmas per K step (64 rows, 32 of them weights), a loop a quarter shorter than the
    # full tile's (one weight row decoded per thread instead of two); the ring sized for the weight rows only
    half_ring, full_ring = result["gemm2 bm8 bn32 s5 quad ring4 half"], result["gemm1 bm8 bn32 s3 quad ring6"]
    assert half_ring["hgmma"] == 8 and half_ring["loop_instructions"] < 0.85 * full_ring["loop_instructions"], (
        half_ring, full_ring)
    assert half_ring["shared"] < 4 * 64 * 68 + 5 * 8 * 128 * 2, half_ring
    for name in ("gemm1 bm8 bn32 s5 w8 quad ring4 half", "gemm2 bm8 bn64 s4 w8 quad ahead2 half"):
        assert result[name]["hgmma"] == 8 * (2 if "ahead2" in name else 1), (name, result[name])
    for kernel in ("gemm1 bm8 bn32 s3", "gemm2 bm8 bn64 s3", "gemm1 bm8 bn32 s3 k2880", "gemm2 bm8 bn64 s3 k2880"):
        # quad-ordered weights: no exchange in the loop (K = 2880: only the peeled partial last step has one)
        assert result[kernel + " quad"]["loop_instructions"] < result[kernel]["loop_instructions"] - 40, kernel


def test_warp_specialized_gemm_experiment_compiles_for_sm90():
    """benchmarks/experiments/ws_gemm.py (the decode in its own warps, not wired into the layer) keeps compiling
    against wgmma_gemm's helpers: every variant (GEMM2 and GEMM1, 4 or 8 MMA warps, one or two decode partitions
    splitting the rows, two to four taking turns by K step)
    without spills, with register hand-over between the partitions (setmaxnreg), a wgmma per k16 step and mbarrier
    waits. (Measured slower than the shipped kernels, benchmarks/NOTES.md "v20", "v21"; kept as the worked example.)"""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "experiments", "ws_gemm.py")
    run = subprocess.run([sys.executable, script, "--compile"], capture_output=True, text=True,
                         env=dict(os.environ, TRITON_INTERPRET="0"), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith(("gemm1 bm", "gemm2 bm"))]
    assert len(lines) == 15 and any(line.startswith("gemm1") for line in lines), run.stdout
    assert sum(" by step " in line for line in lines) == 5, run.stdout     # the small-T variants (turns by K step)
    for line in lines:
        fields = dict(item.split("=") for item in line.split(": ", 1)[1].split())
        assert fields["spills"] == "0" and int(fields["setmaxnreg"]) > 0, line
        assert int(fields["wgmma"]) >= 8 and int(fields["mbarrier_wait"]) >= 2, line


def test_audit_picks_compiles_cached_picks_as_launched():
    """benchmarks/audit_picks.py (every cached pick compiled offline with its launcher's constexprs): the launch
    interception sees both launches of a tail config and one of a plain one, and a compiled pick reports HGMMAs,
    registers and no spills. Runs in a subprocess (the audit compiles for real: TRITON_INTERPRET=0)."""
    code = r'''
import json, sys
sys.path.insert(0, "benchmarks")
from audit_picks import audit, launch_kwargs
from tmoe.kernels.configs import GemmConfig
from tmoe.workloads import WORKLOADS
tail = GemmConfig(256, 64, True, 8, 2, kernel="gluon", tail_block_m=64)
calls = launch_kwargs("gemm1", tail, WORKLOADS["qwen3"], 8192)
ring = GemmConfig(8, 64, True, 4, 4, kernel="gluon", prefetch=3)
tail_launches = [(c["BLOCK_M"], getattr(c["SPLIT"], "value", c["SPLIT"])) for c in calls]
print(json.dumps({"tail": tail_launches, "ring": audit("gemm2", ring, WORKLOADS["qwen3"], 1)}))
'''
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env=dict(os.environ, TRITON_INTERPRET="0"), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert [m for m, _ in result["tail"]] == [256, 64] and len({s for _, s in result["tail"]}) == 2, result
    (ring,) = result["ring"]
    assert ring["block_m"] == 8 and ring["hgmma"] == 8 and ring["spills"] == 0 and 0 < ring["regs"] <= 128, ring
    assert ring["wgmma_waits"] == 1 and not ring["serialized"], ring


# The shipped picks that spill, each timed against its spill-free variants and kept because it is faster
# (benchmarks/NOTES.md "v21": v4flash GEMM2 T = 2048 746.8 vs 920.1 µs, dsv3 GEMM2 T = 2048 1838.2 vs 1910.3, H100)
KNOWN_SPILLS = {("NVIDIA_H100_80GB_HBM3", "v4flash", "gemm2", 2048), ("NVIDIA_H200", "v4flash", "gemm2", 2048),
                ("NVIDIA_H100_80GB_HBM3", "dsv3", "gemm2", 2048)}


def test_every_shipped_pick_compiles_to_wgmma_without_spills(tmp_path):
    """Every Gluon pick of the shipped autotune cache (both cards), compiled for sm_90 as its launcher launches it
    for weights with the "arith" word bits (benchmarks/audit_picks.py; what real checkpoints get): HGMMA in the K loop, no ptxas wgmma serialization, and no spills except the
    measured exceptions above — a cache edit that brings in a spilling or serialized pick fails here. The two card
    directories compile in parallel (~4-8 minutes on a 2-core machine)."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    cards = sorted(d for d in os.listdir(os.path.join(root, "autotune_cache"))
                   if os.path.isdir(os.path.join(root, "autotune_cache", d)))
    assert cards, "no card directories in autotune_cache/"
    env = dict(os.environ, TRITON_INTERPRET="0")
    procs = {card: subprocess.Popen([sys.executable, os.path.join("benchmarks", "audit_picks.py"), "--device", card,
                                     "--json", str(tmp_path / f"{card}.json")], cwd=root, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for card in cards}
    rows = []
    for card, proc in procs.items():
        out, err = proc.communicate(timeout=1500)
        assert proc.returncode in (0, 1) and (tmp_path / f"{card}.json").exists(), err[-3000:]   # 1: spills found
        rows += json.loads((tmp_path / f"{card}.json").read_text())
    assert len(rows) >= 100, len(rows)
    for r in rows:
        key = (r["device"], r["workload"], r["gemm"], r["tokens"])
        assert r["hgmma"] > 0 and not r["serialized"], r
        assert r["spills"] == 0 or key in KNOWN_SPILLS, f"{key} spills {r['spills']} B: {r}"
    assert {(r["device"], r["workload"], r["gemm"], r["tokens"]) for r in rows if r["spills"]} == KNOWN_SPILLS, \
        "a known spilling pick no longer spills (or is gone): update KNOWN_SPILLS and NOTES"
