"""The benchmark scripts stay runnable: their CPU smoke modes (times mean nothing under the
interpreter) run end to end and write the results JSON with the fields DESIGN.md §6 / issue 4 name."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke mode; GPUs run the real benchmark")
def test_bench_ep_cpu_smoke(tmp_path):
    out = tmp_path / "ep.json"
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_ep.py"), "--ranks", "2",
                          "--device", "cpu", "--workload", "tiny", "--tokens", "0,3", "--reps", "1",
                          "--json", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["tokens"] for r in rows] == [0, 3]
    for row in rows:
        assert row["ep"] == 2 and row["transport"] == "collective"
        for key in ("us", "dispatch_us", "combine_us", "nccl_a2a_us", "offrank_gbps"):
            assert key in row and row[key] == row[key], key      # present and not NaN
        assert row["bitwise"] is True, row       # every rank's output = one rank holding every expert


def test_bench_ep_one_rank_check_sees_one_bit():
    """bench_ep's oracle (one rank holding every expert, the weights re-made from each rank's seed) equals the
    layer's output and rejects it with one bit flipped."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from bench_ep import TINY, _OneRank
    from tmoe.workloads import make_routing
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    one = _OneRank(TINY, 2, 4, dev)
    x = torch.randn(3, TINY.hidden, device=dev).to(torch.bfloat16)
    idx, tw = make_routing(3, TINY.num_experts, TINY.topk, "uniform", seed=5, device=dev)
    y = one.output(x, idx, tw).clone()
    assert one.same(y, x, idx, tw)
    y.view(torch.int16)[1, 7] ^= 1
    assert not one.same(y, x, idx, tw)


def test_profile_layer_cases():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from profile_layer import parse_cases
    assert parse_cases("dsv3:128, gptoss:8:zipf") == [("dsv3", 128, "uniform"), ("gptoss", 8, "zipf")]
    for bad in ("dsv3", "dsv9:8", "dsv3:0", "dsv3:x", "qwen3:8:skewed", "dsv3:8:zipf:1"):
        with pytest.raises(ValueError, match="case"):
            parse_cases(bad)


def test_layer_timeline_summary():
    """layer_timeline.summarize: replays split at the flush memsets, times relative to each replay's first kernel,
    medians over the replays, an incomplete replay dropped."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from layer_timeline import FLUSH_MARK, summarize
    flush = dict(name=f"at::{FLUSH_MARK}<uchar>", ts=0.0, dur=80.0)
    events = [dict(flush, ts=0.0), dict(name="_quant", ts=100.0, dur=3.0), dict(name="_gemm1", ts=102.0, dur=50.0),
              dict(flush, ts=200.0), dict(name="_quant", ts=300.0, dur=5.0), dict(name="_gemm1", ts=306.0, dur=40.0),
              dict(flush, ts=400.0), dict(name="_quant", ts=500.0, dur=4.0)]
    got = summarize(events)
    assert got["replays"] == 2 and got["span_us"] == (52.0 + 46.0) / 2
    assert [r["kernel"] for r in got["kernels"]] == ["_quant", "_gemm1"]
    assert got["kernels"][1] == dict(kernel="_gemm1", start_us=4.0, end_us=49.0, dur_us=45.0)


def test_ncu_summary_tables(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from ncu_summary import summarize_raw, summarize_sass
    raw = tmp_path / "raw.csv"
    raw.write_text('"ID","Kernel Name","gpu__time_duration.sum",'
                   '"smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio",'
                   '"smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio"\n'
                   '"","","us","ratio","ratio"\n"0","_gemm1_kernel","812.5","3.5","0.25"\n')
    text = summarize_raw(str(raw))
    assert "_gemm1_kernel" in text and "µs 812.5 us" in text
    assert "long_scoreboard 3.50, barrier 0.25" in text          # largest first
    sass = tmp_path / "sass.csv"
    sass.write_text('"Address","Source","Warp Stall Sampling (All Samples)"\n'
                    '"0x10","LDG.E.128 R4, [R2.64]","30"\n"0x20","HGMMA.64x8x16.F32.BF16 R24, gdesc[UR4]","70"\n'
                    '"0x30","PRMT R5, R4, 0x5140, R6","0"\n')
    text = summarize_sass(str(sass), top=2)
    assert text.splitlines()[0].startswith("3 instructions, 100 stall samples; by opcode: HGMMA 70.0%, LDG 30.0%")
    assert "70.0%  HGMMA" in text and "PRMT R5" not in text


def test_set_cache_pick_from_sweep(tmp_path):
    """set_cache_pick.py --from-sweep: the fastest bitwise-equal variant replaces the pick (the old pick becomes
    the runner-up) only where it gains at least --min-gain; the file stays a valid cache document."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import shutil

    import set_cache_pick
    from tmoe.autotune import cache
    device = "NVIDIA H100 80GB HBM3"
    src = os.path.join(ROOT, "autotune_cache", cache.device_dir_name(device))
    shutil.copytree(src, tmp_path / cache.device_dir_name(device))
    path = cache.cache_path("gemm2", device, 128, 2880, 2880, 4, root=tmp_path)
    doc = cache.load(path)
    pick8 = doc["buckets"]["8"]["best"]["config"]
    pick32 = doc["buckets"]["32"]["best"]["config"]
    faster = dict(pick8, n_blocks=2)
    rows = [dict(pick8, workload="gptoss", tokens=8, gemm="gemm2", us=100.0, same_as_first=True),
            dict(faster, workload="gptoss", tokens=8, gemm="gemm2", us=90.0, same_as_first=True),
            dict(pick8, workload="gptoss", tokens=8, gemm="gemm2", n_blocks=4, us=50.0, same_as_first=False),
            dict(pick32, workload="gptoss", tokens=32, gemm="gemm2", us=100.0, same_as_first=True),
            dict(pick32, workload="gptoss", tokens=32, gemm="gemm2", n_blocks=2, us=99.0, same_as_first=True)]
    rows += [dict(pick32, workload="gptoss", tokens=16, gemm="gemm2", us=80.0, same_as_first=True),   # no bucket 16
             dict(faster, workload="gptoss", tokens=16, gemm="gemm2", us=79.0, same_as_first=True),
             dict(faster, workload="gptoss", tokens=16, gemm="gemm2", n_blocks=4, us=70.0, same_as_first=False)]
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"device": device, "rows": rows}))
    set_cache_pick.from_sweep([str(sweep)], tmp_path, device, 0.02)
    after = cache.load(path)
    assert after["buckets"]["8"]["best"] == {"config": cache.config_to_dict(cache.config_from_dict(faster)), "us": 90.0}
    assert after["buckets"]["8"]["runner_up"]["us"] == 100.0
    assert after["buckets"]["32"] == doc["buckets"]["32"]          # 1% < --min-gain: kept
    # a new bucket takes the fastest bitwise-equal row even below --min-gain (1.3% here)
    assert after["buckets"]["16"]["best"]["us"] == 79.0 and after["buckets"]["16"]["runner_up"] == {
        "config": cache.config_to_dict(cache.config_from_dict(pick32)), "us": 80.0}
    assert list(after["buckets"]) == sorted(after["buckets"], key=int)


def test_set_cache_pick_parses_values():
    """set_cache_pick.py --set FIELD=VALUE: ints, None, and booleans in JSON's or Python's spelling become the
    GemmConfig field types (a string 'True' for n_fastest was a ValueError from GemmConfig)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from set_cache_pick import parse_value
    assert [parse_value(v) for v in ("4", "-1", "None", "null", "true", "True", "false", "False", "asm")] == [
        4, -1, None, None, True, True, False, False, "asm"]


def test_tune_layer_small_candidates():
    """tune_layer_small.k_loop_candidates: the cache's pick first, then the same 4-warp tile with every K loop (plain,
    codes in registers, rings 3 / 4, the ring with overlap and >= 3 stages), no repeats, all valid configs; other
    picks are timed alone. Its rows are the sweep format set_cache_pick.py --from-sweep reads (tested above)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from tune_layer_small import k_loop_candidates

    from tmoe.kernels.configs import GemmConfig
    pick = GemmConfig(8, 64, True, 4, 2, kernel="gluon", prefetch=3, maxnreg=136)
    cands = k_loop_candidates(pick)
    assert cands[0] == pick and len(cands) == len(set(cands)) == 6
    assert sorted(c.k_loop for c in cands[1:]) == [0, 2, 3, 4, 35]
    assert all((c.block_m, c.block_n, c.num_warps) == (8, 64, 4) and c.maxnreg is None for c in cands[1:])
    assert [c.num_stages for c in cands if c.overlap] == [3]
    assert len(k_loop_candidates(GemmConfig(8, 32, True, 4, 3, kernel="gluon"))) == 5   # the pick is the plain loop
    for other in (GemmConfig(128, 64, True, 8, 2, kernel="gluon"), GemmConfig(16, 64, True, 4, 3)):
        assert k_loop_candidates(other) == [other]


def test_tune_layer_small_early_pairs():
    """tune_layer_small.early_pairs (--space early): the cached (GEMM1, GEMM2) picks first, then early GEMM2 off / on
    with the picks' grid orders and with both grids N-block-major; no repeats (a pick already N-block-major or already
    early is not tried twice); only for two Gluon picks."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from tune_layer_small import early_pairs

    from tmoe.kernels.configs import GemmConfig
    g1, g2 = GemmConfig(8, 32, True, 4, 4, kernel="gluon", prefetch=3), GemmConfig(8, 128, True, 4, 6, kernel="gluon")
    pairs = early_pairs(g1, g2)
    assert pairs[0] == (g1, g2) and len(pairs) == len(set(pairs)) == 4
    assert {(a.grid_n_fastest, b.grid_n_fastest, b.early) for a, b in pairs} == {
        (False, False, False), (False, False, True), (True, True, False), (True, True, True)}
    n1, n2 = (GemmConfig(8, 32, True, 4, 4, kernel="gluon", n_fastest=True),
              GemmConfig(8, 128, True, 4, 6, kernel="gluon", n_fastest=True, early=True))
    assert early_pairs(n1, n2) == [(n1, n2), (n1, GemmConfig(8, 128, True, 4, 6, kernel="gluon", n_fastest=True))]
    triton = GemmConfig(16, 64, True, 4, 3)
    assert early_pairs(triton, g2) == [(triton, g2)] and early_pairs(g1, triton) == [(g1, triton)]


def test_tune_layer_small_combo_candidates():
    """tune_layer_small.combo_candidates (--space combo): the pick, then its 4-warp tile with the plain loop / rings 3
    and 4 in both grid orders (no register cap, no groups), no repeats, all valid; other picks alone."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from tune_layer_small import combo_candidates

    from tmoe.kernels.configs import GemmConfig
    pick = GemmConfig(8, 32, True, 4, 4, kernel="gluon", maxnreg=136)
    cands = combo_candidates(pick)
    assert cands[0] == pick and len(cands) == len(set(cands)) == 7
    assert sorted((c.prefetch, c.grid_n_fastest) for c in cands[1:]) == [
        (1, False), (1, True), (3, False), (3, True), (4, False), (4, True)]
    assert all((c.block_m, c.block_n, c.num_stages) == (8, 32, 4) and c.maxnreg is None for c in cands[1:])
    # a pick that is one of the variants is not repeated (the default grid order spelled None or explicitly)
    assert len(combo_candidates(GemmConfig(8, 32, True, 4, 4, kernel="gluon", prefetch=4, n_fastest=True))) == 6
    assert len(combo_candidates(GemmConfig(8, 32, True, 4, 4, kernel="gluon", prefetch=4))) == 6
    for other in (GemmConfig(128, 64, True, 8, 2, kernel="gluon"), GemmConfig(16, 64, True, 4, 3)):
        assert combo_candidates(other) == [other]


def test_tune_layer_small_depth_candidates():
    """tune_layer_small.depth_candidates (--space depth): the pick, then its 4-warp tile with code rings 3 / 4 / 5 / 6
    deep, each with one activation stage more than its depth (the rest of the pick kept, overlap off); a pick that
    is one of them is not repeated; other picks alone."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from tune_layer_small import depth_candidates

    from tmoe.kernels.configs import GemmConfig
    pick = GemmConfig(8, 64, True, 4, 3, kernel="gluon", prefetch=3, n_blocks=2, n_fastest=True)
    cands = depth_candidates(pick)
    assert cands[0] == pick and len(cands) == len(set(cands)) == 5
    assert [(c.prefetch, c.num_stages) for c in cands[1:]] == [(3, 4), (4, 5), (5, 6), (6, 7)]
    assert all((c.block_n, c.n_blocks, c.n_fastest, c.overlap) == (64, 2, True, False) for c in cands)
    assert len(depth_candidates(GemmConfig(8, 64, True, 4, 5, kernel="gluon", prefetch=4))) == 4
    overlapped = GemmConfig(8, 64, True, 4, 4, kernel="gluon", prefetch=3, overlap=True)
    assert [c.overlap for c in depth_candidates(overlapped)] == [True] + [False] * 4
    for other in (GemmConfig(128, 64, True, 8, 2, kernel="gluon"), GemmConfig(16, 64, True, 4, 3)):
        assert depth_candidates(other) == [other]


def test_tune_layer_small_mid4_candidates():
    """tune_layer_small.mid4_candidates (--space mid4): next to an 8-warp pick of <= 64 tokens, 4-warp tiles of its
    block_m and half of it (block_n 32 / 64 by GEMM), N-block-major, a half-width body, rings 3 / 4 with one stage more;
    every one a valid config; other picks alone."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from tune_layer_small import mid4_candidates

    from tmoe.kernels.configs import GemmConfig
    pick = GemmConfig(64, 128, True, 8, 3, kernel="gluon", sub_block_m=32, n_fastest=True, n_blocks=2)
    cands = mid4_candidates(pick, "gemm2")
    assert cands[0] == pick and len(cands) == len(set(cands)) == 5
    assert sorted((c.block_m, c.block_n, c.num_warps, c.sub_block_m, c.prefetch, c.num_stages) for c in cands[1:]) == [
        (32, 64, 4, 16, 3, 4), (32, 64, 4, 16, 4, 5), (64, 64, 4, 32, 3, 4), (64, 64, 4, 32, 4, 5)]
    assert all(c.grid_n_fastest and c.ring_lookahead == c.prefetch for c in cands[1:])
    assert {c.block_n for c in mid4_candidates(pick, "gemm1")[1:]} == {32}
    for other in (GemmConfig(128, 128, True, 8, 3, kernel="gluon"), GemmConfig(8, 64, True, 4, 4, kernel="gluon")):
        assert mid4_candidates(other, "gemm2") == [other]


def test_tune_layer_small_cap_candidates():
    """tune_layer_small.cap_candidates (--space cap): a 4-warp pick, then the same tile capped at 80 / 72 / 64
    registers (a pick that carries one of them is not repeated); 8-warp and Triton picks alone."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from tune_layer_small import cap_candidates

    from tmoe.kernels.configs import GemmConfig
    pick = GemmConfig(8, 32, True, 4, 5, kernel="gluon", prefetch=4)
    assert [c.maxnreg for c in cap_candidates(pick)] == [None, 80, 72, 64]
    assert [c.maxnreg for c in cap_candidates(GemmConfig(8, 32, True, 4, 5, kernel="gluon", maxnreg=72))] == [72, 80, 64]
    for other in (GemmConfig(64, 64, True, 8, 3, kernel="gluon"), GemmConfig(16, 64, True, 4, 3)):
        assert cap_candidates(other) == [other]


def test_tune_layer_small_tile_candidates():
    """tune_layer_small.tile_candidates (--space tiles): the pick, then its K loop with 1 / 2 / 4 channel blocks per
    program, a 4-warp pick's other block_n, and the other grid order; no repeats, all valid; a Triton pick alone."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from tune_layer_small import tile_candidates

    from tmoe.kernels.configs import GemmConfig
    pick = GemmConfig(8, 64, True, 4, 3, kernel="gluon", prefetch=3, n_blocks=2)
    cands = tile_candidates(pick, "gemm2")
    assert cands[0] == pick and len(cands) == len(set(cands)) == 5
    assert sorted(c.n_blocks for c in cands) == [1, 2, 2, 2, 4] and all(c.prefetch == 3 for c in cands)
    assert [c.block_n for c in cands if c.block_n != 64] == [128]
    assert [c.grid_n_fastest for c in cands].count(True) == 1
    grouped = GemmConfig(64, 128, True, 8, 3, kernel="gluon", n_fastest=True, group_m=4)
    assert tile_candidates(grouped, "gemm2")[-1] == GemmConfig(64, 128, True, 8, 3, kernel="gluon", n_fastest=False)
    assert tile_candidates(GemmConfig(16, 64, True, 4, 3), "gemm2") == [GemmConfig(16, 64, True, 4, 3)]


def test_tune_layer_small_half_candidates():
    """tune_layer_small.half_candidates (--space half): the pick, then each half tile of the GEMM (GEMM2: 4 and 8 warps,
    GEMM1: 8) with the pick's K loop and code rings 3 / 4 / 6; all valid for the GEMM; a non-4-warp pick alone."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from tune_layer_small import half_candidates

    from tmoe.kernels.configs import GemmConfig, check_gpu_config, is_half_tile
    for gemm, bn, halves in (("gemm1", 32, {(32, 8)}), ("gemm2", 64, {(32, 4), (64, 8)})):
        pick = GemmConfig(8, bn, True, 4, 4, kernel="gluon", prefetch=3)
        cands = half_candidates(pick, gemm)
        # per half tile: the pick's loop (ring 3, 4 stages: the same as with_code_ring(3)), rings 4 and 6
        assert cands[0] == pick and len(cands) == len(set(cands)) == 1 + 3 * len(halves)
        assert {(c.block_n, c.num_warps) for c in cands[1:]} == halves
        for c in cands[1:]:
            assert is_half_tile(c, gemm) and c.prefetch in (3, 4, 6)
            check_gpu_config(c, gemm, hopper=True)
    eight = GemmConfig(64, 64, True, 8, 3, kernel="gluon")
    assert half_candidates(eight, "gemm1") == [eight]


def test_run_gpu_tests_shards():
    """run_gpu_tests.shards: every node id in exactly one shard, in collection order within a shard; tests of a HEAVY
    file spread over the shards, other files kept whole; costs balanced; a bad process count is a ValueError."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from run_gpu_tests import shards
    heavy = [f"tests/test_gluon_gemm.py::test_bitwise[{n}]" for n in range(12)]
    light = [f"tests/test_formats.py::test_{n}" for n in range(30)] + [f"tests/test_router.py::test_{n}" for n in range(9)]
    ids = heavy[:6] + light + heavy[6:]
    parts = shards(ids, 4, heavy={"tests/test_gluon_gemm.py": 20.0})
    assert sorted(i for p in parts for i in p) == sorted(ids)
    order = {i: n for n, i in enumerate(ids)}
    assert all([order[i] for i in p] == sorted(order[i] for i in p) for p in parts)
    for name in ("test_formats.py", "test_router.py"):
        assert sum(any(name in i for i in p) for p in parts) == 1, name
    cost = [sum(20.0 if "gluon" in i else 1.0 for i in p) for p in parts]
    assert len(parts) == 4 and max(cost) - min(cost) <= 20.0, cost
    assert shards(ids[:2], 8, heavy={}) == [ids[:2]]
    with pytest.raises(ValueError, match="procs"):
        shards(ids, 0)


def test_bench_layer_roofline():
    """DESIGN.md §6's floor: touched experts' MXFP4 bytes at the read rate, or the slots' flops at the fp8 rate."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from bench_layer import roofline
    from tmoe.workloads import Workload
    wl = Workload("tiny", 8, 2, 64, 32)
    idx = torch.tensor([[0, 3], [3, -1], [5, 0]])            # experts 0, 3, 5 touched; 5 slots
    wbytes = 3 * 3 * 64 * 32 * (0.5 + 1 / 32)
    flops = 2 * 3 * 64 * 32 * 5
    r = roofline(wl, idx, {"read_gbps": 1.0, "fp8_tflops": 1e-3})
    assert r["experts_touched"] == 3 and r["weight_bytes"] == wbytes and r["flops"] == flops
    assert r["floor_us"] == max(wbytes / 1e3, flops / 1e3)
    assert roofline(wl, idx, {"read_gbps": 1.0, "fp8_tflops": 1e9})["floor_us"] == wbytes / 1e3   # memory-bound


def test_sweep_gemm_narrow_sub_candidates():
    """A tail-split pick, then the same tile with a 32- / 64-token body and no tail launch; other picks alone."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from sweep_gemm import narrow_sub_candidates
    from tmoe.kernels.configs import GemmConfig
    pick = GemmConfig(256, 64, True, 8, 2, kernel="gluon", tail_block_m=32)
    cands = narrow_sub_candidates(pick)
    assert cands[0] == pick
    assert [(c.tail_block_m, c.sub_block_m, c.block_m, c.block_n) for c in cands[1:]] == [(None, 32, 256, 64),
                                                                                        (None, 64, 256, 64)]
    plain = GemmConfig(64, 64, True, 4, 2, kernel="gluon")
    assert narrow_sub_candidates(plain) == [plain]


def test_sweep_gemm_three_quarter_candidates():
    """A pick, then its three-quarter body; a tail-split pick drops the tail for a tail-wide and a 32-token body; a
    ring pick (not the plain K loop) and a Triton pick alone."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from sweep_gemm import three_quarter_candidates
    from tmoe.kernels.configs import GemmConfig
    pick = GemmConfig(256, 128, True, 8, 2, kernel="gluon", sub_block_m=128)
    assert three_quarter_candidates(pick) == [pick, GemmConfig(256, 128, True, 8, 2, kernel="gluon", sub_block_m=128,
                                                               three_quarter=True)]
    tail = GemmConfig(256, 64, True, 8, 2, kernel="gluon", tail_block_m=64)
    assert [(c.tail_block_m, c.sub_block_m, c.three_quarter) for c in three_quarter_candidates(tail)] == [
        (64, None, False), (None, 64, True), (None, 32, True)]
    for alone in (GemmConfig(8, 32, True, 4, 4, kernel="gluon", prefetch=3), GemmConfig(64, 64, True, 4, 2)):
        assert three_quarter_candidates(alone) == [alone]
    # register caps: each variant uncapped (the pick's own cap) and under each cap
    small = GemmConfig(32, 32, True, 4, 3, kernel="gluon", sub_block_m=16)
    assert [(c.three_quarter, c.maxnreg) for c in three_quarter_candidates(small, (96, 128))] == [
        (False, None), (True, None), (True, 96), (True, 128)]
    assert [(c.tail_block_m, c.sub_block_m, c.maxnreg) for c in three_quarter_candidates(tail, (128,))] == [
        (64, None, None), (None, 64, None), (None, 64, 128), (None, 32, None), (None, 32, 128)]


def test_sweep_gemm_tma_b_candidates():
    """A plain-K-loop pick, then its tile with 3 stages and with the TMA ring; a tail-split pick's tail becomes a body
    (the ring runs one launch); a ring pick (not the plain K loop) and a Triton pick alone."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from sweep_gemm import tma_b_candidates
    from tmoe.kernels.configs import GemmConfig
    pick = GemmConfig(256, 128, True, 8, 2, kernel="gluon", sub_block_m=32, three_quarter=True)
    assert [(c.num_stages, c.tma_b) for c in tma_b_candidates(pick)] == [(2, False), (3, False), (3, True)]
    tail = GemmConfig(256, 64, True, 8, 3, kernel="gluon", tail_block_m=64)
    assert [(c.tail_block_m, c.sub_block_m, c.tma_b) for c in tma_b_candidates(tail)] == [
        (64, None, False), (None, 64, False), (None, 64, True)]
    for alone in (GemmConfig(8, 32, True, 4, 4, kernel="gluon", prefetch=3), GemmConfig(64, 64, True, 4, 2)):
        assert tma_b_candidates(alone) == [alone]


def test_bench_layer_write_results(tmp_path, monkeypatch):
    """The results JSON both layer benchmarks write: device, versions, date, ceilings, extras, rows."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_layer
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    path = bench_layer.write_results([{"tokens": 1}], {"read_gbps": 3000.0}, str(tmp_path / "r.json"), prefix="tk-",
                                     triton_kernels="/x")
    out = json.loads(open(path).read())
    assert out["device"] == "Some GPU" and out["read_gbps"] == 3000.0 and out["triton_kernels"] == "/x"
    assert out["rows"] == [{"tokens": 1}] and {"torch", "triton", "date"} <= out.keys()
    assert bench_layer.cell(None, "5.1f") == "—" and bench_layer.cell(1.25, "5.1f") == "  1.2"


def test_candidate_lists_take_a_three_quarter_pick():
    """The sweeps' and the autotuner's variants of a pick with the three-quarter body (H200 prefill caches): the other
    K loops without it (they cannot run it), the plain loop with it; no ValueError."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from sweep_gemm import overlap_candidates, prefetch_candidates, ring_overlap_candidates
    from tmoe.kernels.configs import GemmConfig
    pick = GemmConfig(256, 64, True, 8, 2, kernel="gluon", sub_block_m=32, three_quarter=True)
    assert [(c.prefetch, c.three_quarter) for c in prefetch_candidates(pick)] == [(1, True), (2, False)]
    assert all(not c.three_quarter for c in overlap_candidates(pick)[1:])
    four = GemmConfig(64, 32, True, 4, 2, kernel="gluon", three_quarter=True)
    assert all(not c.three_quarter for c in prefetch_candidates(four)[2:] + ring_overlap_candidates(four)[1:])
    assert not four.with_code_ring(3).three_quarter
